package turnserver

import (
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// permit is the IP-level peer check of CreatePermission, ChannelBind and Connect: the filter,
// or an IP one of this server's live relays has (so clients of one server reach each other).
// The operator's deny_peers wins even over that exception.
func (s *Server) permit(peer netip.Addr) (bool, string) {
	ok, name := s.policy.Load().filter.Check(peer)
	if ok || (name != denyPeersRange && s.relays.hasIP(peer)) {
		return true, ""
	}
	return false, name
}

// sendAllowed is the per-packet check for a relay of transport network ("udp" or "tcp"): the
// filter, or exactly a live relay address of that transport, so the IP-level exception does
// not open other ports (or the other transport's service on a relay's port). When it
// refuses, name is the range that did.
func (s *Server) sendAllowed(network string, peer netip.AddrPort) (bool, string) {
	ok, name := s.policy.Load().filter.Check(peer.Addr())
	if ok || (name != denyPeersRange && s.relays.hasAddr(network, peer)) {
		return true, ""
	}
	return false, name
}

func (s *Server) refusePeer(client net.Addr, peer netip.Addr, rangeName, method string) {
	s.m.peerRefused.WithLabelValues(rangeName).Inc()
	s.log.Info("turn peer refused", "client", client.String(), "peer", peer.String(), "range", rangeName, "method", method)
}

// permissionHandler implements turn.PermissionHandler.
func (s *Server) permissionHandler(client net.Addr, peerIP net.IP) bool {
	ip, ok := netip.AddrFromSlice(peerIP)
	if !ok {
		return false
	}
	allowed, name := s.permit(ip.Unmap())
	if !allowed {
		s.refusePeer(client, ip.Unmap(), name, "permission")
	}
	return allowed
}

// sendDecision caches the per-packet verdict for a relay's last peer; most allocations talk
// to one. Each packet it drops is counted as a refusal of its range.
type sendDecision struct {
	peer    netip.AddrPort
	pol     *policy
	gen     uint64
	ok      bool
	refused prometheus.Counter // peer_refused_total{range} when !ok
	// own is set when the peer is one of this server's live UDP relays: the datagram is
	// delivered to it inside the process (own_relay.go).
	own *relayRecord
}

// sendDecision is the per-packet peer check of a UDP relay through its one-entry cache, which
// holds until the peer, the policy or the set of live relays change; drops are counted.
func (s *Server) sendDecision(cache *atomic.Pointer[sendDecision], peer netip.AddrPort) *sendDecision {
	pol, gen := s.policy.Load(), s.relays.gen.Load()
	d := cache.Load()
	if d == nil || d.peer != peer || d.pol != pol || d.gen != gen {
		d = &sendDecision{peer: peer, pol: pol, gen: gen}
		var name string
		if d.ok, name = s.sendAllowed("udp", peer); !d.ok {
			d.refused = s.m.peerRefused.WithLabelValues(name)
		} else {
			d.own = s.relays.byAdvertised("udp", peer)
		}
		cache.Store(d)
	}
	if !d.ok {
		d.refused.Inc()
	}
	return d
}
