package main

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"icehub/config"
	"icehub/internal/proxyaddr"
	"icehub/internal/ratelimit"
)

// hubProxy reads PROXY headers on signal.listen, before TLS and, when turn.tls_listen shares
// the port, before the split: the header comes first, so which half a connection is for is
// not known yet. A source in signal.proxy_from may send one (an HTTP reverse proxy there
// names its client in a request header instead); on a shared port a source in
// turn.proxy_from must, as on TURN's own listeners. The carried address is then the
// connection's RemoteAddr for both halves. Both lists are reloadable.
type hubProxy struct {
	trust   atomic.Pointer[proxyTrust]
	shared  bool
	log     *slog.Logger
	logLim  *ratelimit.PerAddr
	refused *prometheus.CounterVec
}

type proxyTrust struct{ turn, signal []netip.Prefix }

func newHubProxy(cfg config.Config, shared bool, log *slog.Logger, reg prometheus.Registerer) (*hubProxy, error) {
	p := &hubProxy{shared: shared, log: log, logLim: ratelimit.New(0.1, 5), // 5 lines, then 1 per 10s, per balancer
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icehub_signal_proxy_header_refused_total",
			Help: "Connections to signal.listen from signal.proxy_from or turn.proxy_from closed for their PROXY header: missing (none within the timeout, or other bytes, where one is required), invalid, or evicted (oldest of too many waiting).",
		}, []string{"reason"})}
	for _, r := range []string{proxyaddr.ReasonMissing, proxyaddr.ReasonInvalid, proxyaddr.ReasonEvicted} {
		p.refused.WithLabelValues(r)
	}
	if reg != nil {
		if err := reg.Register(p.refused); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	p.set(cfg)
	return p, nil
}

// set swaps in the lists of cfg; it cannot fail (reload commits call it).
func (p *hubProxy) set(cfg config.Config) {
	p.trust.Store(&proxyTrust{turn: config.Prefixes(cfg.TURN.ProxyFrom), signal: config.Prefixes(cfg.Signal.ProxyFrom)})
}

func (p *hubProxy) listen(ln net.Listener) net.Listener {
	return proxyaddr.Listen(ln, proxyaddr.Config{Mode: p.mode, Rejected: p.rejected})
}

func (p *hubProxy) mode(peer netip.Addr) proxyaddr.Mode {
	t := p.trust.Load()
	switch {
	case p.shared && proxyaddr.Contains(t.turn, peer):
		return proxyaddr.Required
	case proxyaddr.Contains(t.signal, peer):
		return proxyaddr.Optional
	}
	return proxyaddr.Direct
}

func (p *hubProxy) rejected(peer netip.AddrPort, reason string, err error) {
	p.refused.WithLabelValues(reason).Inc()
	if p.logLim.Allow(peer.Addr(), time.Now()) {
		p.log.Info("signal connection closed: PROXY header", "proxy", peer.String(), "reason", reason, "err", err)
	}
}
