package turnserver

import (
	"errors"
	"net"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"icehub/internal/proxyaddr"
)

// The PROXY protocol behind L4 load balancers (turn.proxy_from). A TCP or TLS connection
// from a listed balancer must start with a PROXY header, read before anything else (before
// the TLS handshake too); from then on its RemoteAddr is the client the header carries, and
// so is everything keyed by it: XOR-MAPPED-ADDRESS, turn.max_conns_per_ip (streamListener
// counts after the header), the answer credit, nonces, the integrity-check cap, quotas,
// logs and pion's 5-tuples. What a balancer's connection holds before its header is
// bounded by proxyaddr (a header timeout, a cap on pending connections).
//
// A header from any other source is not trusted: its bytes are read as TURN framing, which
// they are not, so the connection gets no answer and is closed (a v2 header at once as a
// bad frame; a v1 header reads as the start of a ChannelData frame and waits out the idle
// timeout).
//
// UDP is not covered. The PROXY v2 UDP form prefixes every datagram, and a UDP source can
// be forged: whoever spoofs a balancer's address could claim any client's, and steer the
// answers toward it. Balancers that carry UDP (AWS NLB, Kubernetes with
// externalTrafficPolicy: Local) preserve the client's source address instead.

// proxied wraps a TCP listener of this server: connections from turn.proxy_from, as the
// policy says at the moment they arrive, must send a PROXY header.
func (s *Server) proxied(ln net.Listener) net.Listener {
	return proxyaddr.Listen(ln, proxyaddr.Config{
		Mode: func(peer netip.Addr) proxyaddr.Mode {
			if proxyaddr.Contains(s.policy.Load().proxyFrom, peer) {
				return proxyaddr.Required
			}
			return proxyaddr.Direct
		},
		HeaderTimeout: s.proxyHeaderTimeout, // 0: proxyaddr's default
		Rejected:      s.proxyRejected,
	})
}

// proxyRejected counts, and logs within the source's log budget, a balancer's connection
// closed for its PROXY header.
func (s *Server) proxyRejected(peer netip.AddrPort, reason string, err error) {
	s.proxyRefused.WithLabelValues(reason).Inc()
	if s.sourceLog.allow(peer.Addr(), s.now()) {
		s.log.Info("turn connection closed: PROXY header", "proxy", peer.String(), "reason", reason, "err", err)
	}
}

// newProxyMetric returns icehub_turn_proxy_header_refused_total, registered with reg when
// it is not nil.
func newProxyMetric(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icehub_turn_proxy_header_refused_total",
		Help: "TCP/TLS connections from turn.proxy_from closed for their PROXY header: missing (none within the timeout, or other bytes), invalid, or evicted (oldest of too many waiting).",
	}, []string{"reason"})
	for _, r := range []string{proxyaddr.ReasonMissing, proxyaddr.ReasonInvalid, proxyaddr.ReasonEvicted} {
		c.WithLabelValues(r)
	}
	if reg != nil {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			c = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return c, nil
}
