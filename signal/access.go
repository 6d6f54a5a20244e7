package signal

import (
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"icehub/config"
)

// policy is the part of config.Signal that Reload may change; it is swapped atomically.
type policy struct {
	sig        config.Signal
	anyOrigin  bool
	origins    map[string]bool // normalized "scheme://host[:port]"
	keys       [][]byte
	msgRate    rate.Limit
	msgBurst   int
	apiRate    rate.Limit
	apiBurst   int
	maxFrame   int64
	sendQueue  int
	pingPeriod time.Duration

	resumeWindow time.Duration // 0: resume off
	resumeBuffer int
}

func newPolicy(s config.Signal) (*policy, error) {
	def := config.Default().Signal
	if s.MaxPeersPerRoom <= 0 {
		s.MaxPeersPerRoom = def.MaxPeersPerRoom
	}
	if s.MaxRoomsPerConn <= 0 {
		s.MaxRoomsPerConn = def.MaxRoomsPerConn
	}
	if s.MaxFrameBytes <= 0 {
		s.MaxFrameBytes = def.MaxFrameBytes
	}
	if s.SendQueue <= 0 {
		s.SendQueue = def.SendQueue
	}
	if s.PingInterval.Duration <= 0 {
		s.PingInterval = def.PingInterval
	}
	if s.ResumeBuffer <= 0 {
		s.ResumeBuffer = def.ResumeBuffer
	}
	p := &policy{
		sig:        s,
		origins:    make(map[string]bool),
		maxFrame:   int64(s.MaxFrameBytes),
		sendQueue:  s.SendQueue,
		pingPeriod: s.PingInterval.Duration,
		msgRate:    rate.Inf,
		apiRate:    rate.Inf,

		resumeWindow: max(s.ResumeWindow.Duration, 0),
		resumeBuffer: s.ResumeBuffer,
	}
	for _, o := range s.AllowedOrigins {
		if o == "*" {
			p.anyOrigin = true
			continue
		}
		n, ok := normOrigin(o)
		if !ok {
			return nil, fmt.Errorf("signal: allowed origin %q is not scheme://host[:port]", o)
		}
		p.origins[n] = true
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
		p.apiRate, p.apiBurst = p.msgRate, p.msgBurst
	}
	return p, nil
}

func normOrigin(o string) (string, bool) {
	u, err := url.Parse(strings.TrimSpace(o))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", false
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), true
}

// originAllowed applies allowed_origins: same origin always; then the list, or when it is
// empty, pages on localhost. A request without Origin is not from a browser page and
// passes: the origin check protects users' browsers, API keys protect the server.
func (p *policy) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || p.anyOrigin {
		return true
	}
	n, ok := normOrigin(origin)
	if !ok {
		return false
	}
	u, _ := url.Parse(n)
	// The hub's own pages are always welcome, whichever scheme (http or https) served them.
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	if len(p.origins) > 0 {
		return p.origins[n]
	}
	switch u.Hostname() {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}

// keyAllowed checks Authorization: Bearer K or ?key=K when API keys are configured.
func (p *policy) keyAllowed(r *http.Request) bool {
	return len(p.keys) == 0 || p.keyPresented(r)
}

// keyPresented reports whether the request carries one of the configured API keys.
func (p *policy) keyPresented(r *http.Request) bool {
	if len(p.keys) == 0 {
		return false
	}
	got := r.URL.Query().Get("key")
	if a := r.Header.Get("Authorization"); a != "" {
		if scheme, tok, ok := strings.Cut(a, " "); ok && strings.EqualFold(scheme, "Bearer") {
			got = strings.TrimSpace(tok)
		}
	}
	if got == "" {
		return false
	}
	ok := 0
	for _, k := range p.keys {
		ok |= subtle.ConstantTimeCompare(k, []byte(got))
	}
	return ok == 1
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ipLimiter is a token bucket per client IP; idle buckets are swept so the map stays small.
type ipLimiter struct {
	mu        sync.Mutex
	limit     rate.Limit
	burst     int
	buckets   map[string]*ipBucket
	lastSweep time.Time
}

type ipBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

const ipIdle = 2 * time.Minute

func newIPLimiter(limit rate.Limit, burst int) *ipLimiter {
	return &ipLimiter{limit: limit, burst: burst, buckets: make(map[string]*ipBucket), lastSweep: time.Now()}
}

func (l *ipLimiter) setLimit(limit rate.Limit, burst int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limit, l.burst = limit, burst
	for _, b := range l.buckets {
		b.lim.SetLimit(limit)
		b.lim.SetBurst(burst)
	}
}

func (l *ipLimiter) allow(ip string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limit == rate.Inf {
		return true
	}
	if now.Sub(l.lastSweep) > ipIdle {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > ipIdle {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b := l.buckets[ip]
	if b == nil {
		b = &ipBucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[ip] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// api wraps an /api handler with CORS, preflight, API key and per-IP rate checks.
func (h *Hub) api(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pol := h.pol.Load()
		w.Header().Add("Vary", "Origin")
		if !pol.originAllowed(r) {
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			w.Header().Set("Access-Control-Allow-Origin", o)
		}
		switch r.Method {
		case http.MethodOptions:
			// Preflights carry no credentials, so they are answered before the key check.
			w.Header().Set("Access-Control-Allow-Methods", "GET, OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", "Authorization")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		case http.MethodGet, http.MethodHead:
		default:
			w.Header().Set("Allow", "GET, OPTIONS")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if !pol.keyAllowed(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="icehub"`)
			http.Error(w, "missing or wrong API key", http.StatusUnauthorized)
			return
		}
		if !h.apiLimits.allow(clientIP(r)) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many requests", http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		next(w, r)
	})
}
