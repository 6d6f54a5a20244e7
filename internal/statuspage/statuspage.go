// Package statuspage is the admin listener's status page: live charts of the server's
// Prometheus counters (the registry /metrics serves, sampled here) and a table of the
// busiest TURN allocations, in a page that loads nothing from elsewhere.
//
// Everything on it is for the operator only: usernames and client addresses. The admin
// listener stays on loopback; on top of that the page refuses requests whose Host is a
// name other than localhost (a DNS-rebinding page in the operator's browser would have
// to use one), forbids framing, allows scripts from itself only, and draws every
// user-controlled string as text.
package statuspage

import (
	"embed"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

//go:embed web
var webFS embed.FS

// Allocation is one live TURN allocation as the table shows it.
type Allocation struct {
	User, Client, Transport, Relay, RelayTransport string
	Start                                          time.Time
	BytesToPeer, BytesToClient                     uint64
}

// Config is what New needs.
type Config struct {
	Gatherer prometheus.Gatherer // the registry /metrics serves
	// Allocations lists the live allocations; nil: the table stays empty.
	Allocations func() []Allocation
	Interval    time.Duration // sampling period; 0: DefaultInterval
	History     int           // samples kept; 0: DefaultHistory
}

// Defaults: ten minutes of history at one sample every two seconds.
const (
	DefaultInterval = 2 * time.Second
	DefaultHistory  = 300
)

// Page samples the counters in the background and serves the page and its JSON.
type Page struct {
	cfg  Config
	now  func() time.Time
	hist *history
	tops *busiest
	stop chan struct{}
	once sync.Once
}

// New starts sampling; Close stops it.
func New(cfg Config) *Page {
	p := newPage(cfg, time.Now)
	go p.run()
	return p
}

// newPage is New without the sampling goroutine, on clock now.
func newPage(cfg Config, now func() time.Time) *Page {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.History <= 0 {
		cfg.History = DefaultHistory
	}
	p := &Page{cfg: cfg, now: now, stop: make(chan struct{})}
	p.hist = newHistory(cfg.History)
	p.tops = &busiest{list: cfg.Allocations}
	p.sample()
	return p
}

func (p *Page) run() {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.sample()
		case <-p.stop:
			return
		}
	}
}

// Close stops the sampler.
func (p *Page) Close() { p.once.Do(func() { close(p.stop) }) }

// Register adds the page (GET /), its assets and its JSON (GET /api/status,
// GET /api/allocations) to mux.
func (p *Page) Register(mux *http.ServeMux) {
	web, _ := fs.Sub(webFS, "web")
	files := http.FileServerFS(web)
	mux.Handle("GET /{$}", guard(files))
	mux.Handle("GET /status.js", guard(files))
	mux.Handle("GET /status.css", guard(files))
	mux.Handle("GET /api/status", guard(http.HandlerFunc(p.serveStatus)))
	mux.Handle("GET /api/allocations", guard(http.HandlerFunc(p.serveAllocations)))
}

// csp lets the page load its own script and style and fetch its own JSON, nothing else.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// guard refuses hosts a rebinding attack would use and sets the page's security headers.
func guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !localHost(r.Host) {
			http.Error(w, "the status page answers to an IP address or localhost only", http.StatusMisdirectedRequest)
			return
		}
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// localHost reports whether a Host header names an IP address or localhost: what an
// operator uses (directly or through ssh -L), and what a DNS-rebinding attack cannot.
func localHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if net.ParseIP(host) != nil {
		return true
	}
	host = strings.ToLower(host)
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}
