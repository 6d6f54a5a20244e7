// Package signal is icehub's signaling hub: WebSocket rooms relaying offers, answers and
// candidates between peers, TURN REST credentials for every client, the HTTP API and the
// embedded demo pages.
package signal

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"icehub/auth"
	"icehub/internal/ratelimit"
)

// Config is what the hub needs from the rest of the program.
type Config struct {
	Settings   Settings // what a reload may change (PrepareReload)
	Ring       *auth.Ring
	TTL        time.Duration // lifetime of minted TURN credentials
	ICEURLs    []string      // stun:, turn: and turns: URLs handed to clients
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are kept but not registered
	Rooms      Rooms                 // nil: in-memory rooms
}

// Hub serves the WebSocket signaling protocol and the HTTP API. Create it with New.
type Hub struct {
	ring    *auth.Ring
	ttl     time.Duration
	log     *slog.Logger
	rooms   Rooms
	metrics *metrics

	pol atomic.Pointer[policy]

	ctx    context.Context // cancelled by Shutdown; parent of every connection's context
	cancel context.CancelFunc

	mu      sync.Mutex
	clients map[*client]struct{}
	perIP   map[string]int
	closing bool
	// closeCode and closeReason are what Shutdown or Restart closes WebSockets with.
	closeCode   int
	closeReason string
	wg          sync.WaitGroup
	sessions    map[string]*session // by peer id: live, parked here, or being resumed
	parked      int                 // sessions parked on this node
	parkedIP    map[string]int      // of them, per client IP
	parkCap     int                 // at most this many parked sessions (maxParked; tests lower it)

	store resumeStore

	apiLimits *ratelimit.PerAddr

	reloadMu sync.Mutex // one PrepareReload/commit at a time
}

// New validates cfg and returns a hub ready to serve.
func New(cfg Config) (*Hub, error) {
	if cfg.Ring == nil {
		return nil, errors.New("Config.Ring is nil")
	}
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("credential TTL %s is under one second", cfg.TTL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rooms == nil {
		cfg.Rooms = NewMemoryRooms()
	}
	h := &Hub{
		ring:     cfg.Ring,
		ttl:      cfg.TTL,
		log:      cfg.Logger,
		rooms:    cfg.Rooms,
		clients:  make(map[*client]struct{}),
		perIP:    make(map[string]int),
		sessions: make(map[string]*session),
		parkedIP: make(map[string]int),
		parkCap:  maxParked,
	}
	if st, ok := cfg.Rooms.(resumeStore); ok {
		h.store = st
	} else {
		h.store = newMemResume(cfg.Rooms)
	}
	ice := cfg.ICEURLs
	if cfg.Settings.ICEURLs != nil {
		ice = cfg.Settings.ICEURLs
	}
	pol, err := newPolicy(cfg.Settings, ice)
	if err != nil {
		return nil, err
	}
	h.pol.Store(pol)
	h.apiLimits = ratelimit.New(pol.apiRate, pol.apiBurst)
	h.metrics, err = newMetrics(cfg.Registerer, h.roomCount)
	if err != nil {
		return nil, err
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	if ev, ok := cfg.Rooms.(evicter); ok {
		ev.OnEvict(h.evicted)
	}
	if mv, ok := cfg.Rooms.(mover); ok {
		mv.onMoved(h.moved)
	}
	return h, nil
}

// mover is a Rooms that tells the hub when a session of this node was resumed on another.
type mover interface {
	onMoved(func(id, sel string))
}

// evicter is a Rooms that drops members on its own, as a clustered store does with the peers
// of a node that stopped heartbeating.
type evicter interface {
	OnEvict(func(room, peer string))
}

// evicted tells a room that the store dropped a peer: its node stopped heartbeating, or it
// was parked and its window passed or its buffer overflowed. The store logs which.
func (h *Hub) evicted(room, peer string) {
	ctx, cancel := context.WithTimeout(context.Background(), leaveWait)
	defer cancel()
	h.announceLeft(ctx, room, peer)
}

// Handler returns the hub's routes: /ws, /api/ice-servers, /api/turn, /healthz and the demo pages.
func (h *Hub) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", h.serveWS)
	mux.Handle("/api/ice-servers", h.api(h.serveICEServers))
	mux.Handle("/api/turn", h.api(h.serveTURN))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	mux.Handle("/", staticHandler())
	return mux
}

// PrepareReload checks s and builds everything it needs without changing anything; the
// returned commit applies it and cannot fail. So a reload that touches several components
// prepares them all and commits all or none. Once committed, open connections get the new
// message rate at once; frame and queue sizes and the ping period apply to new connections,
// the resume settings to connections lost from then on, new ICE URLs to every credential
// handed out from then on. IdleTimeout and ReadTimeout are the HTTP server's and are
// ignored here.
func (h *Hub) PrepareReload(s Settings) (commit func(), err error) {
	ice := s.ICEURLs
	if ice == nil {
		ice = h.pol.Load().ice
	}
	pol, err := newPolicy(s, ice)
	if err != nil {
		return nil, err
	}
	return func() {
		h.reloadMu.Lock()
		defer h.reloadMu.Unlock()
		h.pol.Store(pol)
		h.apiLimits.SetLimit(pol.apiRate, pol.apiBurst)
		h.mu.Lock()
		for c := range h.clients {
			c.limiter.SetLimit(pol.msgRate)
			c.limiter.SetBurst(pol.msgBurst)
		}
		h.mu.Unlock()
	}, nil
}

// Reload is PrepareReload and its commit, for a caller with nothing else to reload.
func (h *Hub) Reload(s Settings) error {
	commit, err := h.PrepareReload(s)
	if err != nil {
		return err
	}
	commit()
	return nil
}

// Settings returns the settings in force.
func (h *Hub) Settings() Settings { return h.pol.Load().sig }

// Shutdown refuses new connections, closes every WebSocket with 1001 "going away" and waits
// for their goroutines until ctx is done.
func (h *Hub) Shutdown(ctx context.Context) error {
	return h.closeAll(ctx, closeGoingAway, "going away")
}

// Restart is Shutdown for a node that drains before it stops, or restarts: every WebSocket
// is closed with 1012 "service restart", which tells clients to reconnect (to another node
// behind a load balancer) rather than that the service is gone. Sessions end or are parked
// for a resume exactly as with Shutdown.
func (h *Hub) Restart(ctx context.Context) error {
	return h.closeAll(ctx, closeServiceRestart, "service restart")
}

func (h *Hub) closeAll(ctx context.Context, code int, reason string) error {
	h.mu.Lock()
	h.closing = true
	h.closeCode, h.closeReason = code, reason
	for c := range h.clients {
		c.kill(code, reason, endShutdown)
	}
	// Sessions parked here end with the process; in a cluster the other nodes evict them
	// from their rooms when their window passes.
	for _, s := range h.sessions {
		if s.parkedHere {
			s.timer.Stop()
		}
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	defer h.cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// admit counts a new connection unless the hub is closing or its IP is at its connection limit.
func (h *Hub) admit(ip string, max int) (ok bool, status int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false, http.StatusServiceUnavailable
	}
	if max > 0 && h.perIP[ip] >= max {
		return false, http.StatusTooManyRequests
	}
	h.perIP[ip]++
	h.wg.Add(1)
	return true, 0
}

func (h *Hub) release(ip string) {
	h.mu.Lock()
	if h.perIP[ip]--; h.perIP[ip] <= 0 {
		delete(h.perIP, ip)
	}
	h.mu.Unlock()
	h.wg.Done()
}

func (h *Hub) addClient(c *client) {
	h.mu.Lock()
	h.clients[c] = struct{}{}
	closing, code, reason := h.closing, h.closeCode, h.closeReason
	h.mu.Unlock()
	h.metrics.conns.Inc()
	h.metrics.connsTotal.Inc()
	if closing {
		c.kill(code, reason, endShutdown)
	}
}

func (h *Hub) removeClient(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
	h.metrics.conns.Dec()
}

func (h *Hub) roomCount() float64 {
	if l, ok := h.rooms.(interface{ Len() int }); ok {
		return float64(l.Len())
	}
	return 0
}

// newPeerID returns 128 random bits, base64url: unguessable, and valid as a TURN user name.
func newPeerID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail on supported platforms.
	return base64.RawURLEncoding.EncodeToString(b)
}
