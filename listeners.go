package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"icehub/config"
	"icehub/internal/portshare"
	"icehub/turnserver"
)

// hubPort is where the hub's HTTP server listens and, when TURN over TLS shares that port
// (the 443 set-up), the TURN half of it.
type hubPort struct {
	http   net.Listener // serve plain HTTP on it unless tls is set
	tls    *tls.Config  // non-nil: serve HTTPS on http
	scheme string
	share  *portshare.Splitter // non-nil when TURN over TLS and HTTPS share one port
	// turnTLS is turn.tls_listen minus the shared address, which share serves; turnStreams
	// are the decrypted TURN streams from share.
	turnTLS     config.Addrs
	turnStreams []net.Listener
	proxy       *hubProxy // reads PROXY headers before TLS and the split
}

// bindHubPort binds signal.listen. When the same address is also in turn.tls_listen, one TLS
// listener is split after the handshake: STUN to TURN, the rest to HTTP. PROXY headers from
// signal.proxy_from and turn.proxy_from are read first, before TLS (hubProxy).
func bindHubPort(cfg config.Config, cs *certs, log *slog.Logger, reg prometheus.Registerer) (*hubPort, error) {
	f := &hubPort{turnTLS: cfg.TURN.TLSListen, scheme: "http"}
	shared := slices.Contains(cfg.TURN.TLSListen, cfg.Signal.Listen)
	proxy, err := newHubProxy(cfg, shared, log, reg)
	if err != nil {
		return nil, err
	}
	raw, err := net.Listen("tcp", cfg.Signal.Listen)
	if err != nil {
		return nil, fmt.Errorf("signal.listen: %w", err)
	}
	f.proxy = proxy
	ln := proxy.listen(raw)
	if !shared {
		f.http = ln
		if f.tls = cs.signalConfig(); f.tls != nil {
			f.scheme = "https"
		}
		return f, nil
	}
	tc := cs.signalConfig()
	if tc == nil {
		tc = cs.turnConfig()
	}
	f.share, err = portshare.New(portshare.Config{Listener: ln, TLS: tc, Logger: log,
		IsFirst: turnserver.LooksLikeSTUN, PeekLen: turnserver.STUNPeekLen})
	if err != nil {
		ln.Close()
		return nil, err
	}
	f.http = f.share.Rest()
	f.scheme = "https"
	f.turnStreams = []net.Listener{f.share.First()}
	f.turnTLS = slices.DeleteFunc(slices.Clone(cfg.TURN.TLSListen), func(a string) bool { return a == cfg.Signal.Listen })
	log.Info("TURN over TLS and HTTPS share one port", "addr", ln.Addr().String())
	return f, nil
}

func (f *hubPort) close() {
	if f.share != nil {
		f.share.Close()
	} else {
		f.http.Close()
	}
}
