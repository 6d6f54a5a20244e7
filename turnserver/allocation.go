package turnserver

import (
	"net"
	"time"

	"github.com/pion/turn/v5"
)

// eventHandler follows pion's allocations: it counts and logs them, attaches each to its
// relay record (for the log line's traffic figures), and tells the UDP listener socket a
// client allocated through about its allocation and channels, so its fast path can relay
// without pion.
func (s *Server) eventHandler() turn.EventHandler {
	return turn.EventHandler{
		OnAllocationCreated: func(src, dst net.Addr, _, user, _ string, relay net.Addr, _ int) {
			s.live.Add(1)
			s.m.active.Inc()
			s.m.allocations.Inc()
			s.quotas.addIP(addrPortOf(src).Addr(), 1)
			r := s.relays.attach(src, dst, relay, s.now())
			s.conns.allocated(src, r)
			if r != nil && r.owner != nil {
				r.owner.allocationCreated(src, r)
			}
			s.log.Info("turn allocation created", "user", user, "client", src.String(),
				"transport", src.Network(), "relay", relay.String(), "relay_transport", relay.Network())
		},
		OnAllocationDeleted: func(src, dst net.Addr, _, user, _ string) {
			defer s.live.Add(-1)
			s.m.active.Dec()
			s.quotas.addIP(addrPortOf(src).Addr(), -1)
			r := s.relays.detach(src, dst)
			if r == nil {
				s.log.Info("turn allocation deleted", "user", user, "client", src.String())
				return
			}
			if r.owner != nil {
				r.owner.allocationDeleted(r)
			}
			s.offload.allocationDeleted(r) // adds what the kernel relayed to r's figures
			s.reportEnded(r)
			s.log.Info("turn allocation deleted", "user", user, "client", src.String(),
				"transport", src.Network(), "relay", r.advertised.String(), "relay_transport", r.network,
				"duration", s.now().Sub(r.start).Round(time.Millisecond),
				"bytes_to_peer", r.bytesToPeer.Load(), "bytes_to_client", r.bytesToClient.Load(),
				"packets_to_peer", r.pktsToPeer.Load(), "packets_to_client", r.pktsToClient.Load())
		},
		OnChannelCreated: func(src, dst net.Addr, _, _, _ string, relay, peer net.Addr, num uint16) {
			s.channelChanged(relay, peer, num, true)
			s.offload.channel(relay, src, dst, peer, num, true)
		},
		OnChannelDeleted: func(src, dst net.Addr, _, _, _ string, relay, peer net.Addr, num uint16) {
			s.channelChanged(relay, peer, num, false)
			s.offload.channel(relay, src, dst, peer, num, false)
		},
		// Only the XDP offload follows permissions: pion relays a channel's data whether or
		// not its permission is live, the kernel only while it is.
		OnPermissionCreated: func(src, dst net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
			s.offload.permission(relay, src, dst, peer, true)
		},
		OnPermissionDeleted: func(src, dst net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
			s.offload.permission(relay, src, dst, peer, false)
		},
	}
}

// channelChanged tells the listener socket of a UDP relay that pion bound (bound) or unbound
// channel num to peer.
func (s *Server) channelChanged(relay, peer net.Addr, num uint16, bound bool) {
	if r := s.relays.lookupAdvertised("udp", relay); r != nil && r.owner != nil {
		r.owner.channelChanged(r, addrPortOf(peer), num, bound)
	}
}
