package turnserver

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v5"

	"icehub/auth"
	"icehub/config"
)

// settings are the parts of the configuration Reload may change; readers load them
// atomically so a reload never stops traffic.
type settings struct {
	filter   *PeerFilter
	maxUser  int
	maxTotal int
	tcpRelay bool
	limiter  *sourceLimiter
	rate     float64
	burst    int
}

func newSettings(t config.TURN, old *settings) *settings {
	s := &settings{
		filter:   NewPeerFilter(t.AllowPeers, t.DenyPeers),
		maxUser:  t.MaxAllocationsPerUser,
		maxTotal: t.MaxAllocations,
		tcpRelay: t.TCPRelay,
		rate:     t.UnauthRate,
		burst:    t.UnauthBurst,
	}
	if old != nil && old.rate == s.rate && old.burst == s.burst {
		s.limiter = old.limiter // keep the buckets: a reload is no reason to forgive a flood
	} else {
		s.limiter = newSourceLimiter(s.rate, s.burst)
	}
	return s
}

// core is the state every listener, relay and pion callback of one Server shares.
type core struct {
	log      *slog.Logger
	ring     *auth.Ring
	realm    string
	m        *metrics
	settings atomic.Pointer[settings]
	keys     *keyCache
	memo     *keyMemo
	quotas   *quotas
	relays   *relaySet
	now      func() time.Time
	live     atomic.Int64 // allocations whose deletion has not been logged yet
	// preAuthIdle overrides the package's preAuthIdle when set (nanoseconds); tests shorten it.
	preAuthIdle atomic.Int64
}

// reserve counts an allocation for user against the total quota.
func (c *core) reserve(user string) error {
	if !c.quotas.reserve(user, c.settings.Load().maxTotal) {
		c.m.quota.WithLabelValues("total").Inc()
		c.log.Info("turn allocation refused: total quota", "user", user, "max_allocations", c.settings.Load().maxTotal)
		return ErrCapacity
	}
	return nil
}

// releaseRelay returns a relay's quota and drops it from the live set, once.
func (c *core) releaseRelay(r *relayRec) {
	r.released.Do(func() {
		c.relays.remove(r)
		c.quotas.release(r.user)
	})
}

// permit is the IP-level peer check of CreatePermission, ChannelBind and Connect: the filter,
// or an IP one of this server's live relays has (so clients of one server reach each other).
// The operator's deny_peers wins even over that exception.
func (c *core) permit(peer netip.Addr) (bool, string) {
	ok, name := c.settings.Load().filter.Check(peer)
	if ok || (name != denyPeersRange && c.relays.hasIP(peer)) {
		return true, ""
	}
	return false, name
}

// sendAllowed is the per-packet check for a relay of transport network ("udp" or "tcp"):
// the filter, or exactly a live relay address of that transport, so the IP-level exception
// does not open other ports (or the other transport's service on a relay's port). When it
// refuses, name is the range that did.
func (c *core) sendAllowed(network string, peer netip.AddrPort) (bool, string) {
	ok, name := c.settings.Load().filter.Check(peer.Addr())
	if ok || (name != denyPeersRange && c.relays.hasAddr(network, peer)) {
		return true, ""
	}
	return false, name
}

func (c *core) refusePeer(client net.Addr, peer netip.Addr, rangeName, method string) {
	c.m.peerRefused.WithLabelValues(rangeName).Inc()
	c.log.Info("turn peer refused", "client", client.String(), "peer", peer.String(), "range", rangeName, "method", method)
}

// permissionHandler implements turn.PermissionHandler.
func (c *core) permissionHandler(client net.Addr, peerIP net.IP) bool {
	ip, ok := netip.AddrFromSlice(peerIP)
	if !ok {
		return false
	}
	allowed, name := c.permit(ip.Unmap())
	if !allowed {
		c.refusePeer(client, ip.Unmap(), name, "permission")
	}
	return allowed
}

// quotaHandler implements turn.QuotaHandler (486 when a user has too many allocations).
func (c *core) quotaHandler(userID, _ string, src net.Addr) bool {
	max := c.settings.Load().maxUser
	if max > 0 && c.quotas.userCount(userID) >= max {
		c.m.quota.WithLabelValues("user").Inc()
		c.log.Info("turn allocation refused: user quota", "user", userID, "client", src.String(), "max_allocations_per_user", max)
		return false
	}
	return true
}

// authHandler implements turn.AuthHandler. The gate has already checked MESSAGE-INTEGRITY
// against every secret and left the matching key; without one the request is refused (401).
func (c *core) authHandler(ra *turn.RequestAttributes) (string, []byte, bool) {
	if k, ok := c.keys.take(cacheID(ra.SrcAddr.String(), ra.Username), c.now()); ok {
		return k.user, k.key, true
	}
	reason := "bad_signature"
	_, _, err := c.ring.Passwords(ra.Username)
	switch {
	case errors.Is(err, auth.ErrExpired):
		reason = "expired"
	case err != nil:
		reason = "malformed"
	}
	c.m.authFail.WithLabelValues(reason).Inc()
	// The username is public (expiry and user name); passwords and keys are never logged.
	c.log.Info("turn auth failed", "client", ra.SrcAddr.String(), "username", ra.Username,
		"method", ra.Method.String(), "reason", reason)
	return "", nil, false
}

func (c *core) eventHandler() turn.EventHandler {
	return turn.EventHandler{
		OnAllocationCreated: func(src, dst net.Addr, _, user, _ string, relay net.Addr, _ int) {
			c.live.Add(1)
			c.m.active.Inc()
			c.m.allocations.Inc()
			c.fastAllocCreated(src, c.relays.attach(src, dst, relay, c.now()))
			c.log.Info("turn allocation created", "user", user, "client", src.String(),
				"transport", src.Network(), "relay", relay.String(), "relay_transport", relay.Network())
		},
		OnAllocationDeleted: func(src, dst net.Addr, _, user, _ string) {
			defer c.live.Add(-1)
			c.m.active.Dec()
			r := c.relays.detach(src, dst)
			c.fastAllocDeleted(r)
			if r == nil {
				c.log.Info("turn allocation deleted", "user", user, "client", src.String())
				return
			}
			c.log.Info("turn allocation deleted", "user", user, "client", src.String(),
				"transport", src.Network(), "relay", r.adv.String(), "relay_transport", r.network,
				"duration", c.now().Sub(r.start).Round(time.Millisecond),
				"bytes_to_peer", r.bytesToPeer.Load(), "bytes_to_client", r.bytesToClient.Load(),
				"packets_to_peer", r.pktsToPeer.Load(), "packets_to_client", r.pktsToClient.Load())
		},
		OnChannelCreated: func(_, _ net.Addr, _, _, _ string, relay, peer net.Addr, num uint16) {
			c.fastChannel(relay, peer, num, true)
		},
		OnChannelDeleted: func(_, _ net.Addr, _, _, _ string, relay, peer net.Addr, num uint16) {
			c.fastChannel(relay, peer, num, false)
		},
	}
}
