package main

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"

	"icehub/config"
)

// certs holds the TURN and HTTPS certificates behind atomic pointers, so a SIGHUP swaps them
// for new handshakes while connections already up keep theirs.
type certs struct {
	turn, signal atomic.Pointer[tls.Certificate]
}

func loadCerts(c config.Config) (*certs, error) {
	cs := &certs{}
	if c.TURN.TLSCert != "" {
		crt, err := tls.LoadX509KeyPair(c.TURN.TLSCert, c.TURN.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("turn.tls_cert: %w", err)
		}
		cs.turn.Store(&crt)
	}
	if c.Signal.TLSCert != "" {
		crt, err := tls.LoadX509KeyPair(c.Signal.TLSCert, c.Signal.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("signal.tls_cert: %w", err)
		}
		cs.signal.Store(&crt)
	}
	return cs, nil
}

// swap takes the certificates of a freshly loaded set.
func (c *certs) swap(n *certs) {
	c.turn.Store(n.turn.Load())
	c.signal.Store(n.signal.Load())
}

func (c *certs) turnConfig() *tls.Config {
	if c.turn.Load() == nil {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return c.turn.Load(), nil
	}}
}

func (c *certs) signalConfig() *tls.Config {
	if c.signal.Load() == nil {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return c.signal.Load(), nil
	}}
}
