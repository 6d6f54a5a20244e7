package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"slices"

	"icehub/config"
	"icehub/turnserver"
)

// front is where the hub's HTTP server listens and what TURN gets besides its own listeners.
type front struct {
	http    net.Listener // serve plain HTTP on it unless tls is set
	tls     *tls.Config  // non-nil: serve HTTPS on http
	scheme  string
	share   *turnserver.PortShare // non-nil when TURN over TLS and HTTPS share one port
	turn    config.TURN           // cfg.TURN minus the shared TLS address, which share serves
	streams []net.Listener        // decrypted TURN streams from share
}

// bindFront binds signal.listen. When the same address is also in turn.tls_listen (the 443
// set-up), one TLS listener is split after the handshake: STUN to TURN, the rest to HTTP.
func bindFront(cfg config.Config, cs *certs, log *slog.Logger) (*front, error) {
	f := &front{turn: cfg.TURN, scheme: "http"}
	ln, err := net.Listen("tcp", cfg.Signal.Listen)
	if err != nil {
		return nil, fmt.Errorf("signal.listen: %w", err)
	}
	shared := slices.Contains(cfg.TURN.TLSListen, cfg.Signal.Listen)
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
	f.share, err = turnserver.NewPortShare(turnserver.PortShareConfig{Listener: ln, TLS: tc, Logger: log})
	if err != nil {
		ln.Close()
		return nil, err
	}
	f.http = f.share.HTTP()
	f.scheme = "https"
	f.streams = []net.Listener{f.share.TURN()}
	f.turn.TLSListen = slices.DeleteFunc(slices.Clone(cfg.TURN.TLSListen), func(a string) bool { return a == cfg.Signal.Listen })
	log.Info("TURN over TLS and HTTPS share one port", "addr", ln.Addr().String())
	return f, nil
}

func (f *front) close() {
	if f.share != nil {
		f.share.Close()
	} else {
		f.http.Close()
	}
}
