// Package turnserver builds icehub's STUN/TURN server on pion/turn from config.TURN:
// listeners (UDP with SO_REUSEPORT, TCP, TLS), relays limited to relay_ports, a peer filter
// that is safe by default, quotas, TURN REST authentication under every configured secret,
// per-source limits on unauthenticated requests, slog logging and Prometheus metrics.
package turnserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"

	"icehub/auth"
	"icehub/config"
)

// Errors New, Reload and the relays wrap; callers branch on them with errors.Is.
var (
	ErrConfig            = errors.New("turnserver: bad configuration")
	ErrListen            = errors.New("turnserver: cannot listen")
	ErrRestartRequired   = errors.New("turnserver: change needs a restart")
	ErrCapacity          = errors.New("turnserver: allocation limit reached")
	ErrNoRelayPort       = errors.New("turnserver: no free relay port")
	ErrFamilyUnsupported = errors.New("turnserver: address family not relayed")
)

// Config is what New needs; main builds it from the loaded configuration.
type Config struct {
	TURN       config.TURN
	Ring       *auth.Ring            // TURN REST secrets: the first signs, all verify
	Logger     *slog.Logger          // nil means slog.Default()
	Registerer prometheus.Registerer // nil means metrics are kept but not exported
	// TLS serves turn.tls_listen when set (main passes one whose GetCertificate follows
	// certificate reloads); nil means turn.tls_cert and turn.tls_key are loaded once.
	TLS *tls.Config
	// Streams are extra listeners of already-decrypted TURN streams, such as PortShare.TURN()
	// when TURN over TLS shares port 443 with HTTPS. The server closes them on Close.
	Streams []net.Listener
}

// Server is a running STUN/TURN server.
type Server struct {
	c         *core
	pion      *turn.Server
	turn      config.TURN
	addrs     []net.Addr
	closeOnce sync.Once
	closeErr  error
}

// New binds every listen address and starts serving. Errors wrap ErrConfig or ErrListen.
func New(cfg Config) (*Server, error) {
	t := cfg.TURN
	if cfg.Ring == nil {
		return nil, fmt.Errorf("%w: no secret ring", ErrConfig)
	}
	if t.Realm == "" {
		return nil, fmt.Errorf("%w: turn.realm is empty", ErrConfig)
	}
	if len(t.Listen) == 0 && len(t.TLSListen) == 0 && len(cfg.Streams) == 0 {
		return nil, fmt.Errorf("%w: turn.listen is empty", ErrConfig)
	}
	if t.RelayPorts.Min == 0 || t.RelayPorts.Max < t.RelayPorts.Min {
		return nil, fmt.Errorf("%w: turn.relay_ports %d-%d", ErrConfig, t.RelayPorts.Min, t.RelayPorts.Max)
	}
	relayIP, publicIP, err := parseIPs(t)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("%w: metrics: %v", ErrConfig, err)
	}
	c := &core{
		log: log, ring: cfg.Ring, realm: t.Realm, m: m,
		keys: newKeyCache(), memo: newKeyMemo(), quotas: newQuotas(), relays: newRelaySet(), now: time.Now,
	}
	c.settings.Store(newSettings(t, nil))

	nUDP := t.UDPSockets
	if nUDP == 0 {
		nUDP = runtime.NumCPU()
	}
	s := &Server{c: c, turn: t}
	var sets []*listenSet
	var pcs []turn.PacketConnConfig
	var lns []turn.ListenerConfig
	newGen := func(ip netip.Addr) *relayGen {
		return &relayGen{c: c, minP: t.RelayPorts.Min, maxP: t.RelayPorts.Max,
			v4: relayFamily(4, ip, relayIP, publicIP), v6: relayFamily(6, ip, relayIP, publicIP)}
	}
	for _, a := range t.Listen {
		ap, err := parseListen(a)
		if err != nil {
			return nil, closeAll(sets, fmt.Errorf("%w: turn.listen %q: %v", ErrConfig, a, err))
		}
		ls, err := bindListen(ap, nUDP)
		if err != nil {
			return nil, closeAll(sets, err)
		}
		sets = append(sets, ls)
		gen := newGen(ls.ip)
		if gen.v4 == nil && gen.v6 == nil {
			return nil, closeAll(sets, fmt.Errorf("%w: no relay address for turn.listen %q", ErrConfig, a))
		}
		for _, pc := range ls.udp {
			// One generator per socket: its relays know the listener socket their client
			// talks to, so the fast path can answer on it.
			sockGen := *gen
			gpc := newGatedPacketConn(pc, &gate{c: c, gen: &sockGen})
			sockGen.owner = gpc
			pcs = append(pcs, turn.PacketConnConfig{
				PacketConn:            gpc,
				RelayAddressGenerator: &sockGen, PermissionHandler: c.permissionHandler,
			})
		}
		lns = append(lns, turn.ListenerConfig{
			Listener:              &gatedListener{Listener: ls.tcp, g: &gate{c: c, gen: gen, stream: true}},
			RelayAddressGenerator: gen, PermissionHandler: c.permissionHandler,
		})
		s.addrs = append(s.addrs, ls.udp[0].LocalAddr(), ls.tcp.Addr())
	}
	tlsLns, err := listenTLS(t, cfg.TLS, c, newGen)
	if err != nil {
		return nil, closeAll(sets, err)
	}
	for _, ln := range cfg.Streams {
		ip := netip.IPv6Unspecified()
		if ta, ok := ln.Addr().(*net.TCPAddr); ok {
			ip, _ = netip.AddrFromSlice(ta.IP)
			ip = ip.Unmap()
		}
		gen := newGen(ip)
		tlsLns = append(tlsLns, turn.ListenerConfig{
			Listener:              &gatedListener{Listener: ln, g: &gate{c: c, gen: gen, stream: true}},
			RelayAddressGenerator: gen, PermissionHandler: c.permissionHandler,
		})
	}
	for _, l := range tlsLns {
		lns = append(lns, l)
		s.addrs = append(s.addrs, l.Listener.Addr())
	}
	s.pion, err = turn.NewServer(turn.ServerConfig{
		PacketConnConfigs: pcs,
		ListenerConfigs:   lns,
		LoggerFactory:     slogFactory{log},
		Realm:             t.Realm,
		AuthHandler:       c.authHandler,
		QuotaHandler:      c.quotaHandler,
		EventHandler:      c.eventHandler(),
	})
	if err != nil {
		for _, l := range tlsLns {
			_ = l.Listener.Close()
		}
		return nil, closeAll(sets, fmt.Errorf("%w: %v", ErrConfig, err))
	}
	log.Info("turn server listening", "addrs", fmt.Sprint(s.addrs), "realm", t.Realm,
		"relay_ports", fmt.Sprintf("%d-%d", t.RelayPorts.Min, t.RelayPorts.Max), "udp_sockets", nUDP)
	return s, nil
}

func parseIPs(t config.TURN) (relayIP, publicIP netip.Addr, err error) {
	if t.RelayIP != "" {
		if relayIP, err = netip.ParseAddr(t.RelayIP); err != nil {
			return relayIP, publicIP, fmt.Errorf("%w: turn.relay_ip %q", ErrConfig, t.RelayIP)
		}
	}
	if t.PublicIP != "" {
		if publicIP, err = netip.ParseAddr(t.PublicIP); err != nil {
			return relayIP, publicIP, fmt.Errorf("%w: turn.public_ip %q", ErrConfig, t.PublicIP)
		}
	}
	return relayIP.Unmap(), publicIP.Unmap(), nil
}

// listenTLS binds turn.tls_listen (TURN over TLS, "turns:"); the gate sees decrypted frames.
func listenTLS(t config.TURN, tc *tls.Config, c *core, newGen func(netip.Addr) *relayGen) ([]turn.ListenerConfig, error) {
	if len(t.TLSListen) == 0 {
		return nil, nil
	}
	if tc == nil {
		cert, err := tls.LoadX509KeyPair(t.TLSCert, t.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("%w: turn.tls_cert/turn.tls_key: %v", ErrConfig, err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var out []turn.ListenerConfig
	for _, a := range t.TLSListen {
		ap, err := parseListen(a)
		if err == nil {
			var ln net.Listener
			if ln, err = net.Listen("tcp"+famSuffix(ap.Addr()), ap.String()); err == nil {
				gen := newGen(ap.Addr())
				out = append(out, turn.ListenerConfig{
					Listener:              &gatedListener{Listener: tls.NewListener(ln, tc), g: &gate{c: c, gen: gen, stream: true}},
					RelayAddressGenerator: gen, PermissionHandler: c.permissionHandler,
				})
				continue
			}
		}
		for _, l := range out {
			_ = l.Listener.Close()
		}
		return nil, fmt.Errorf("%w: turn.tls_listen %q: %v", ErrListen, a, err)
	}
	return out, nil
}

// Addrs returns the bound listen addresses: per turn.listen entry its UDP then its TCP
// address (same port), then the TLS ones.
func (s *Server) Addrs() []net.Addr { return slices.Clone(s.addrs) }

// Reload applies a new peer filter, quotas, tcp_relay and rate limits without touching
// live allocations. Keys that need a restart are reported in an ErrRestartRequired error;
// everything else is applied regardless.
func (s *Server) Reload(t config.TURN) error {
	s.c.settings.Store(newSettings(t, s.c.settings.Load()))
	var keys []string
	o := s.turn
	check := func(key string, same bool) {
		if !same {
			keys = append(keys, key)
		}
	}
	check("turn.listen", slices.Equal(o.Listen, t.Listen))
	check("turn.realm", o.Realm == t.Realm)
	check("turn.public_ip", o.PublicIP == t.PublicIP)
	check("turn.relay_ip", o.RelayIP == t.RelayIP)
	check("turn.relay_ports", o.RelayPorts == t.RelayPorts)
	check("turn.udp_sockets", o.UDPSockets == t.UDPSockets)
	check("turn.tls_listen", slices.Equal(o.TLSListen, t.TLSListen))
	check("turn.tls_cert", o.TLSCert == t.TLSCert && o.TLSKey == t.TLSKey)
	if len(keys) > 0 {
		return fmt.Errorf("%w: %s", ErrRestartRequired, strings.Join(keys, ", "))
	}
	return nil
}

// AllocationCount returns the number of live allocations, for draining.
func (s *Server) AllocationCount() int { return s.pion.AllocationCount() }

// closeWait bounds how long Close waits for pion's asynchronous allocation teardown.
const closeWait = 2 * time.Second

// Close stops the listeners; pion then closes every allocation and its relay sockets. Close
// waits (briefly) until their deletions are logged, so nothing logs after it returns.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.pion.Close()
		deadline := time.Now().Add(closeWait)
		for s.c.live.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	})
	return s.closeErr
}
