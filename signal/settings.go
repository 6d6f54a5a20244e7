package signal

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"icehub/config"
	"icehub/internal/proxyaddr"
)

// Settings are the hub's tunables. main maps server.toml's [signal] table onto them; a
// reload hands the hub a new value (PrepareReload). Start from DefaultSettings.
type Settings struct {
	MaxPeersPerRoom int           // a room's seats; the next joiner gets "full"
	MaxRoomsPerConn int           // rooms one session may be in
	MaxFrameBytes   int           // largest frame accepted (1009 past it); new connections
	SendQueue       int           // frames queued for a slow reader before it is dropped; new connections
	PingInterval    time.Duration // WebSocket ping period; new connections

	// AllowedOrigins are the other sites whose pages may use /ws and /api ("*": any). Empty:
	// pages on localhost. The hub's own pages are always allowed; which origins are its own
	// is said by PublicOrigins, Hostnames, the hosts of its ICE URLs and the address a
	// request arrives on, never by the request's Host header (DNS rebinding).
	AllowedOrigins []string
	PublicOrigins  []string // scheme://host[:port] the hub's pages are served under, e.g. behind a proxy
	Hostnames      []string // further names and IPs the hub is reached under (main: its TLS certificate's)

	APIKeys           []string // when set, /ws and /api need one (Bearer or ?key=)
	MaxConnsPerIP     int      // concurrent WebSockets per client IP; 0: no limit
	MessagesPerSecond float64  // frames (pings included) per second per connection; 0: no limit
	MessageBurst      int

	ResumeWindow time.Duration // how long a session outlives a lost connection; 0: resume off
	ResumeBuffer int           // frames a parked session may miss

	// ProxyFrom are the reverse proxies trusted to name the client of a request in
	// ClientIPHeader ("X-Forwarded-For" or "Forwarded"; empty: none), which the per-IP
	// limits and the logs then use; requests from anywhere else are known by their
	// connection's address, whatever they say. (main's listener also reads PROXY headers
	// from these sources, before the hub sees the connection.)
	ProxyFrom      []netip.Prefix
	ClientIPHeader string
	// ICEURLs, when not nil, replace the stun:, turn: and turns: URLs handed to clients
	// (Config.ICEURLs at start), for instance on a reload that turns TURN off. nil keeps
	// the list in force.
	ICEURLs []string

	// For the http.Server that serves Handler, which main builds: the hub does not apply
	// them, and a reload cannot change them.
	IdleTimeout time.Duration
	ReadTimeout time.Duration
}

// DefaultSettings returns the defaults server.toml documents.
func DefaultSettings() Settings {
	return Settings{
		MaxPeersPerRoom:   2,
		MaxRoomsPerConn:   8,
		MaxFrameBytes:     64 << 10,
		SendQueue:         256,
		PingInterval:      20 * time.Second,
		MaxConnsPerIP:     64,
		MessagesPerSecond: 50,
		MessageBurst:      100,
		ResumeWindow:      30 * time.Second,
		ResumeBuffer:      256,
		ClientIPHeader:    proxyaddr.XForwardedFor,
		IdleTimeout:       60 * time.Second,
		ReadTimeout:       10 * time.Second,
	}
}

// policy is Settings checked and compiled; the hub swaps it whole on a reload.
type policy struct {
	sig       Settings
	ice       []string // the ICE URLs handed to clients
	anyOrigin bool
	origins   map[string]bool // normalized "scheme://host[:port]" of AllowedOrigins
	own       map[string]bool // normalized PublicOrigins
	ownHosts  map[string]bool // lower-case host names and canonical IPs that are the hub's own
	keys      [][]byte
	msgRate   rate.Limit
	msgBurst  int
	apiRate   float64 // per second per IP for /api; 0: no limit
	apiBurst  int

	maxFrame   int64
	sendQueue  int
	pingPeriod time.Duration

	resumeWindow time.Duration // 0: resume off
	resumeBuffer int

	proxyFrom []netip.Prefix
	ipHeader  string // proxyaddr.XForwardedFor, proxyaddr.Forwarded or ""
}

// newPolicy checks s and compiles it; iceURLs contribute their hosts to the hub's own names.
func newPolicy(s Settings, iceURLs []string) (*policy, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case s.MaxPeersPerRoom < 1:
		bad("max_peers_per_room %d: must be 1 or more", s.MaxPeersPerRoom)
	case s.MaxRoomsPerConn < 1:
		bad("max_rooms_per_conn %d: must be 1 or more", s.MaxRoomsPerConn)
	case s.MaxFrameBytes < 512:
		bad("max_frame_bytes %d: must be 512 or more", s.MaxFrameBytes)
	case s.SendQueue < 1:
		bad("send_queue %d: must be 1 or more", s.SendQueue)
	case s.PingInterval < 100*time.Millisecond:
		bad("ping_interval %s: must be 100ms or more", s.PingInterval)
	case s.MaxConnsPerIP < 0 || s.MessagesPerSecond < 0 || s.MessageBurst < 0:
		bad("max_conns_per_ip, messages_per_second and message_burst must not be negative")
	case s.ResumeWindow < 0 || s.ResumeBuffer < 1:
		bad("resume_window must not be negative and resume_buffer must be 1 or more")
	}
	ipHeader, ok := proxyaddr.CanonicalHeader(s.ClientIPHeader)
	if !ok {
		bad("client_ip_header %q: must be X-Forwarded-For, Forwarded or empty", s.ClientIPHeader)
	}
	for _, p := range s.ProxyFrom {
		if !p.IsValid() {
			bad("proxy_from: invalid prefix")
		}
	}
	p := &policy{
		sig:          s,
		ice:          append([]string(nil), iceURLs...),
		origins:      make(map[string]bool),
		own:          make(map[string]bool),
		ownHosts:     make(map[string]bool),
		maxFrame:     int64(s.MaxFrameBytes),
		sendQueue:    s.SendQueue,
		pingPeriod:   s.PingInterval,
		msgRate:      rate.Inf,
		resumeWindow: s.ResumeWindow,
		resumeBuffer: s.ResumeBuffer,
		proxyFrom:    slices.Clone(s.ProxyFrom),
		ipHeader:     ipHeader,
	}
	for _, o := range s.AllowedOrigins {
		if o == "*" {
			p.anyOrigin = true
			continue
		}
		n, ok := normOrigin(o)
		if !ok {
			bad("allowed_origins: %q is not scheme://host[:port]", o)
		}
		p.origins[n] = true
	}
	for _, o := range s.PublicOrigins {
		n, ok := normOrigin(o)
		if !ok {
			bad("public_origins: %q is not scheme://host[:port]", o)
		}
		p.own[n] = true
	}
	for _, h := range s.Hostnames {
		if h = canonHost(h); h != "" {
			p.ownHosts[h] = true
		}
	}
	for _, u := range iceURLs {
		if h := iceURLHost(u); h != "" && !strings.Contains(h, HostPlaceholder) {
			p.ownHosts[h] = true
		}
	}
	for _, k := range s.APIKeys {
		if k != "" {
			p.keys = append(p.keys, []byte(k))
		}
	}
	// Zero means no limit; the same per-IP budget guards the HTTP API.
	if s.MessagesPerSecond > 0 {
		p.msgRate = rate.Limit(s.MessagesPerSecond)
		p.msgBurst = max(s.MessageBurst, 1)
		p.apiRate, p.apiBurst = s.MessagesPerSecond, p.msgBurst
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// iceURLHost returns the host of a stun:/turn:/turns: URL (RFC 7064/7065: scheme:host[:port][?query]).
func iceURLHost(u string) string {
	_, rest, ok := strings.Cut(u, ":")
	if !ok {
		return ""
	}
	rest, _, _ = strings.Cut(rest, "?")
	if h, _, err := net.SplitHostPort(rest); err == nil {
		rest = h
	}
	return canonHost(rest)
}

// canonHost lower-cases a host name and writes an IP address canonically, without brackets.
func canonHost(h string) string {
	h = strings.ToLower(strings.Trim(strings.TrimSpace(h), "[]"))
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return h
}

// normOrigin normalizes an origin to lower-case "scheme://host[:port]"; ok is false for
// anything that is not one (a path, a user, another scheme, "null").
func normOrigin(o string) (string, bool) { return config.NormOrigin(o) }
