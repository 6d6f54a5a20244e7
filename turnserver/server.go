// Package turnserver is icehub's STUN/TURN server, built on pion/turn through its extension
// points: the client sockets pion reads pass admission checks first (admission.go); relay
// sockets are bound in the configured port range and filter peers per packet
// (relay_address.go, relay_conn.go, permission.go); allocation events keep quotas, logs and
// the UDP fast path in step (allocation.go). On Linux a UDP listen socket and its relays are
// served by one batched event loop (udp_loop_linux.go, on internal/udploop), which relays
// ChannelData and answers Binding requests without pion; elsewhere pion's own read loops do.
package turnserver

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"

	"icehub/auth"
	"icehub/internal/ratelimit"
	"icehub/turnserver/internal/stunwire"
)

// Server is a running STUN/TURN server. Its unexported methods are pion's callbacks and what
// every listener and relay of the server shares.
type Server struct {
	log    *slog.Logger
	ring   *auth.Ring
	realm  string
	m      *metrics
	policy atomic.Pointer[policy]
	// handoff carries the key admission verified to pion's AuthHandler; keys remembers the
	// long-term keys of usernames that verified.
	handoff   *keyHandoff
	keys      *longTermKeys
	nonces    *sourceNonces
	sourceLog *sourceLog
	quotas    *quotas
	relays    *relaySet
	conns     *connCounter
	now       func() time.Time
	// challengeLen is the size of a 401 or 438 answer: what an unauthenticated request
	// must have credit for.
	challengeLen int
	creditsMu    sync.Mutex
	credits      []*ratelimit.Credit // one per listener's admission, for reloads
	live         atomic.Int64        // allocations whose deletion has not been logged yet
	// closing is set when Close starts: allocations ending from then on end by shutdown.
	closing   atomic.Bool
	onEnded   func(AllocationRecord)
	totalCaps [2]rateBucket // turn.total_bitrate, by direction (bitrate.go)
	draining  atomic.Bool   // Drain was called: Allocate goes elsewhere
	altNext   atomic.Uint64 // round-robin over the alternate servers
	// preAuthIdle is how long a stream client may take per frame before it authenticated.
	preAuthIdle time.Duration
	// proxyRefused and proxyHeaderTimeout serve turn.proxy_from (proxy.go).
	proxyRefused       *prometheus.CounterVec
	proxyHeaderTimeout time.Duration

	pion      *turn.Server
	offload   *offloader // nil: user space only (offload_linux.go)
	addrs     []net.Addr
	closeOnce sync.Once
	closeErr  error
}

// New binds every listen address and starts serving. Errors wrap ErrConfig or ErrListen.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
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
	s := &Server{
		log: log, ring: cfg.Ring, realm: cfg.Realm, m: m,
		handoff: newKeyHandoff(), keys: newLongTermKeys(), nonces: newSourceNonces(), sourceLog: newSourceLog(log),
		quotas: newQuotas(), relays: newRelaySet(), conns: newConnCounter(),
		now: time.Now, preAuthIdle: cmp(cfg.preAuthIdle, preAuthIdle), challengeLen: challengeLen(cfg.Realm),
		onEnded: cfg.OnAllocationEnded,
	}
	s.policy.Store(newPolicy(cfg.Settings, nil))
	s.proxyHeaderTimeout = cfg.proxyHeaderTimeout
	if s.proxyRefused, err = newProxyMetric(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("%w: metrics: %v", ErrConfig, err)
	}
	nUDP := cmp(cfg.UDPSockets, runtime.NumCPU())
	portable := forcePortableUDP()

	var sets []*listenSet
	var pcs []turn.PacketConnConfig
	var lns []turn.ListenerConfig
	// closeAll undoes a half-built server: sockets still in sets, and everything handed
	// over to listener wrappers.
	closeAll := func(err error) (*Server, error) {
		for _, ls := range sets {
			ls.close()
		}
		for _, pc := range pcs {
			_ = pc.PacketConn.Close()
		}
		for _, l := range lns {
			_ = l.Listener.Close()
		}
		_ = s.offload.close()
		return nil, err
	}
	newGen := func(listen netip.Addr) *relayAddresses {
		return &relayAddresses{s: s, ports: cfg.RelayPorts,
			v4: relayFamily(4, listen, cfg.RelayIP, cfg.PublicIP), v6: relayFamily(6, listen, cfg.RelayIP, cfg.PublicIP)}
	}
	stream := func(ln net.Listener, gen *relayAddresses) turn.ListenerConfig {
		return turn.ListenerConfig{
			Listener:              newStreamListener(ln, s.newAdmission(gen, true)),
			RelayAddressGenerator: gen, PermissionHandler: s.permissionHandler,
		}
	}
	for _, ap := range cfg.Listen {
		ls, err := bindListen(ap, nUDP)
		if err != nil {
			return closeAll(err)
		}
		sets = append(sets, ls)
		gen := newGen(ls.ip)
		if gen.v4 == nil && gen.v6 == nil {
			return closeAll(fmt.Errorf("%w: no relay address for listen address %s", ErrConfig, ap))
		}
		s.addrs = append(s.addrs, ls.udp[0].LocalAddr(), ls.tcp.Addr())
		for _, pc := range ls.udp {
			// One generator per socket: its relays belong to the listener socket their
			// client talks to, so the UDP loop can answer on it.
			sockGen := *gen
			lst := newUDPListener(pc, s.newAdmission(&sockGen, false), portable)
			sockGen.owner = lst
			pcs = append(pcs, turn.PacketConnConfig{
				PacketConn: lst, RelayAddressGenerator: &sockGen, PermissionHandler: s.permissionHandler,
			})
		}
		lns = append(lns, stream(s.proxied(ls.tcp), gen))
		ls.udp, ls.tcp = nil, nil // the wrappers in pcs and lns own them now
	}
	for _, ap := range cfg.TLSListen {
		ln, err := net.Listen("tcp"+famSuffix(ap.Addr()), ap.String())
		if err != nil {
			return closeAll(fmt.Errorf("%w: tls %s: %v", ErrListen, ap, err))
		}
		// The PROXY header comes before the TLS handshake.
		lns = append(lns, stream(tls.NewListener(s.proxied(ln), cfg.TLS), tlsGen(newGen(ap.Addr()))))
		s.addrs = append(s.addrs, ln.Addr())
	}
	for _, ln := range cfg.Streams {
		ip := netip.IPv6Unspecified()
		if ta, ok := ln.Addr().(*net.TCPAddr); ok {
			ip, _ = netip.AddrFromSlice(ta.IP)
			ip = ip.Unmap()
		}
		lns = append(lns, stream(ln, tlsGen(newGen(ip))))
		s.addrs = append(s.addrs, ln.Addr())
	}
	s.offload = openOffload(s, cfg) // before pion starts: its events reach the offload
	s.pion, err = turn.NewServer(turn.ServerConfig{
		PacketConnConfigs:  pcs,
		ListenerConfigs:    lns,
		LoggerFactory:      slogFactory{log},
		Realm:              cfg.Realm,
		AuthHandler:        s.authHandler,
		QuotaHandler:       s.quotaHandler,
		EventHandler:       s.eventHandler(),
		ChannelBindTimeout: cfg.channelLifetime,
		PermissionTimeout:  cfg.permissionLifetime,
	})
	if err != nil {
		return closeAll(fmt.Errorf("%w: %v", ErrConfig, err))
	}
	log.Info("turn server listening", "addrs", fmt.Sprint(s.addrs), "realm", cfg.Realm,
		"relay_ports", fmt.Sprintf("%d-%d", cfg.RelayPorts.Min, cfg.RelayPorts.Max), "udp_sockets", nUDP,
		"udp_loop", !portable && udploopSupported)
	return s, nil
}

// challengeLen is the size of the 401 (or 438) admission and pion answer with: the error
// code with its reason phrase, a minted nonce and the realm.
func challengeLen(realm string) int {
	nonce := strings.Repeat("n", base64.RawURLEncoding.EncodedLen(4+nonceMACLen))
	return stunwire.ChallengeLen(stunwire.ReasonUnauthorized, nonce, realm)
}

// cmp is v, or def when v is zero.
func cmp[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Addrs returns the bound listen addresses: per Listen entry its UDP then its TCP address
// (same port), then the TLS ones, then the Streams'.
func (s *Server) Addrs() []net.Addr { return slices.Clone(s.addrs) }

// PrepareReload validates new settings and builds what they need without changing anything;
// commit swaps them in and cannot fail. Live allocations keep their relays; the new peer
// filter applies to their next packet.
func (s *Server) PrepareReload(set Settings) (commit func(), err error) {
	if err := set.validate(); err != nil {
		return nil, err
	}
	p := newPolicy(set, s.policy.Load())
	return func() {
		p.integrity.SetLimit(set.IntegrityRate, set.IntegrityBurst)
		s.creditsMu.Lock()
		for _, c := range s.credits {
			c.SetParams(set.AnswerAllowance, set.AnswerRefill)
		}
		s.creditsMu.Unlock()
		s.policy.Store(p)
		s.offload.reconcile() // channels the new filter denies leave the kernel
	}, nil
}

// AllocationCount returns the number of live allocations, for draining.
func (s *Server) AllocationCount() int { return s.pion.AllocationCount() }

// closeWait bounds how long Close waits for pion's asynchronous allocation teardown.
const closeWait = 2 * time.Second

// Close stops the listeners; pion then closes every allocation and its relay sockets. Close
// waits (briefly) until their deletions are logged, so nothing logs after it returns.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.closeErr = s.pion.Close()
		deadline := time.Now().Add(closeWait)
		for s.live.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		s.closeErr = errors.Join(s.closeErr, s.offload.close())
	})
	return s.closeErr
}
