package turnserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"icehub/auth"
)

// Errors New, PrepareReload and the relays wrap; callers branch on them with errors.Is.
var (
	ErrConfig            = errors.New("turnserver: bad configuration")
	ErrListen            = errors.New("turnserver: cannot listen")
	ErrCapacity          = errors.New("turnserver: allocation limit reached")
	ErrNoRelayPort       = errors.New("turnserver: no free relay port")
	ErrFamilyUnsupported = errors.New("turnserver: address family not relayed")
)

// Config is what New needs. Everything but Settings is fixed for the server's life: changing
// it takes a new Server (main restarts for that).
type Config struct {
	// Listen addresses serve STUN/TURN on UDP and TCP at once (same port).
	Listen []netip.AddrPort
	// TLSListen addresses serve TURN over TLS ("turns:") with TLS.
	TLSListen []netip.AddrPort
	TLS       *tls.Config
	// Streams are extra listeners of already-decrypted TURN streams, such as the TURN half of
	// a port shared with HTTPS. The server closes them on Close. Their owner reads PROXY
	// headers (before the TLS handshake); Settings.ProxyFrom does not apply to them.
	Streams []net.Listener
	// Realm is sent in 401 challenges.
	Realm string
	// PublicIP is advertised in XOR-RELAYED-ADDRESS instead of the relay's own address (a
	// host behind 1:1 NAT); RelayIP is where relay sockets bind. Zero values: unset.
	PublicIP, RelayIP netip.Addr
	// RelayPorts is the inclusive range relay sockets are bound in.
	RelayPorts PortRange
	// UDPSockets is the number of SO_REUSEPORT sockets per UDP listen address; 0: one per core.
	UDPSockets int
	Ring       *auth.Ring            // TURN REST secrets: the first signs, all verify
	Logger     *slog.Logger          // nil: slog.Default()
	Registerer prometheus.Registerer // nil: metrics are kept but not exported
	Settings   Settings
	// OnAllocationEnded, if set, gets the account of every allocation that ends, from the
	// goroutine that deleted it: it must not block (queue the record, drop it when full).
	// Close returns after it has been called for the allocations Close ended.
	OnAllocationEnded func(AllocationRecord)
	// Offload relays ChannelData of UDP clients in the kernel: OffloadXDP, or "" / "off"
	// (user space only). Where the XDP program cannot load, New logs why and relays in user
	// space. OffloadInterfaces are where it attaches; empty: the interfaces carrying the
	// concrete listen addresses and RelayIP.
	Offload           string
	OffloadInterfaces []string

	// Test knobs (zero: the defaults). channelLifetime and permissionLifetime are pion's
	// ChannelBindTimeout and PermissionTimeout (10 and 5 minutes); offloadSync is how often
	// the offload's counters reach the metrics (offloadSyncEvery); offloadChannels bounds
	// the channels one allocation holds in the kernel (offloadChannelsPerAlloc).
	channelLifetime, permissionLifetime, offloadSync time.Duration
	offloadChannels                                  int

	// preAuthIdle overrides how long a TCP/TLS client may take per frame before it has
	// authenticated (tests shorten it); 0 means preAuthIdle.
	preAuthIdle time.Duration
	// proxyHeaderTimeout overrides proxyaddr.DefaultHeaderTimeout (tests shorten it).
	proxyHeaderTimeout time.Duration
}

// OffloadXDP is Config.Offload's value for the XDP fast path (turn.offload = "xdp").
const OffloadXDP = "xdp"

// PortRange is an inclusive port range.
type PortRange struct{ Min, Max uint16 }

// Settings are what PrepareReload may change while allocations live on.
type Settings struct {
	// AllowPeers opens ranges the default peer filter closes; DenyPeers closes more and
	// wins over AllowPeers and over the own-relay exception.
	AllowPeers, DenyPeers []netip.Prefix
	// MaxAllocationsPerUser (486 past it) and MaxAllocations (508) bound live allocations;
	// 0 means no limit.
	MaxAllocationsPerUser int
	MaxAllocations        int
	// MaxAllocationsPerIP bounds live allocations per client IP (486 past it); 0: no limit.
	MaxAllocationsPerIP int
	// TCPRelay allows RFC 6062 TCP relay allocations; off, they are refused with 442.
	TCPRelay bool
	// AnswerAllowance and AnswerRefill bound the bytes answered to unauthenticated or failed
	// requests from one address: beyond what it sent, at most AnswerAllowance bytes, of
	// which AnswerRefill per second come back (ratelimit.Credit).
	AnswerAllowance float64
	AnswerRefill    float64
	// IntegrityRate and IntegrityBurst cap MESSAGE-INTEGRITY checks (HMAC work) per source IP.
	IntegrityRate  float64
	IntegrityBurst int
	// MaxConnsPerIP caps TCP and TLS connections per client IP; 0: no limit.
	MaxConnsPerIP int
	// AllocateTimeout closes a TCP or TLS connection that has no allocation by then,
	// whatever it sends (RFC 6062 data connections excepted); 0: never.
	AllocateTimeout time.Duration
	// ProxyFrom are the load balancers whose TCP and TLS connections must start with a
	// PROXY protocol header (v1 or v2); the client address it carries is the connection's
	// for everything (proxy.go). UDP is not affected. Empty: no PROXY headers.
	ProxyFrom []netip.Prefix

	// MaxBitrate caps every allocation, each direction, in bits per second; TotalBitrate caps
	// all of them together, each direction. Datagrams past a cap are dropped (bitrate.go);
	// RFC 6062 TCP relays are paced instead. 0: no cap. A reload applies to live allocations.
	MaxBitrate, TotalBitrate uint64
	// STUNOnly refuses Allocate with 403 once it authenticated; Binding is answered as
	// always, and allocations made before a reload turned it on live on.
	STUNOnly bool
	// AlternateServers are named (round-robin, among those of the client's address family)
	// in a 300 Try Alternate answer to an authenticated Allocate when MaxAllocations is
	// reached or the server drains; with none that fits, 508. TLS clients always get 508.
	AlternateServers []netip.AddrPort
}

func (c Config) validate() error {
	switch {
	case c.Ring == nil:
		return fmt.Errorf("%w: no secret ring", ErrConfig)
	case c.Realm == "":
		return fmt.Errorf("%w: empty realm", ErrConfig)
	case len(c.Listen) == 0 && len(c.TLSListen) == 0 && len(c.Streams) == 0:
		return fmt.Errorf("%w: nothing to listen on", ErrConfig)
	case len(c.TLSListen) > 0 && c.TLS == nil:
		return fmt.Errorf("%w: TLS listen addresses without a TLS config", ErrConfig)
	case c.RelayPorts.Min == 0 || c.RelayPorts.Max < c.RelayPorts.Min:
		return fmt.Errorf("%w: relay ports %d-%d", ErrConfig, c.RelayPorts.Min, c.RelayPorts.Max)
	case c.UDPSockets < 0:
		return fmt.Errorf("%w: %d UDP sockets", ErrConfig, c.UDPSockets)
	case c.Offload != "" && c.Offload != "off" && c.Offload != OffloadXDP:
		return fmt.Errorf("%w: offload %q: want \"off\" or %q", ErrConfig, c.Offload, OffloadXDP)
	}
	return c.Settings.validate()
}

func (s Settings) validate() error {
	switch {
	case s.MaxAllocationsPerUser < 0 || s.MaxAllocations < 0 || s.MaxAllocationsPerIP < 0:
		return fmt.Errorf("%w: negative allocation limit", ErrConfig)
	case s.AnswerAllowance < 0 || s.AnswerRefill < 0:
		return fmt.Errorf("%w: negative answer allowance", ErrConfig)
	case s.IntegrityRate < 0 || s.IntegrityBurst < 0:
		return fmt.Errorf("%w: negative integrity check rate", ErrConfig)
	case s.MaxConnsPerIP < 0 || s.AllocateTimeout < 0:
		return fmt.Errorf("%w: negative connection limit", ErrConfig)
	}
	for _, p := range s.ProxyFrom {
		if !p.IsValid() {
			return fmt.Errorf("%w: invalid proxy_from prefix", ErrConfig)
		}
	}
	for _, ap := range s.AlternateServers {
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			return fmt.Errorf("%w: alternate server %s", ErrConfig, ap)
		}
	}
	return nil
}
