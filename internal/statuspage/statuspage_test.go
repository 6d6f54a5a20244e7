package statuspage

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func serve(t *testing.T, p *Page, target, host string) *httptest.ResponseRecorder {
	t.Helper()
	mux := http.NewServeMux()
	p.Register(mux)
	req := httptest.NewRequest("GET", target, nil)
	req.Host = host
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, req)
	return w
}

func getJSON(t *testing.T, p *Page, target string, out any) {
	t.Helper()
	w := serve(t, p, target, "127.0.0.1:9641")
	if w.Code != 200 {
		t.Fatalf("%s: %d %s", target, w.Code, w.Body)
	}
	if err := json.Unmarshal(w.Body.Bytes(), out); err != nil {
		t.Fatalf("%s: %v", target, err)
	}
}

// The charts show what the registry holds: gauges as they are, counters as per-second rates
// (bytes as bits), parts that are off (no such metric) as gaps.
func TestStatusFollowsTheRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	active := prometheus.NewGauge(prometheus.GaugeOpts{Name: "icehub_turn_allocations_active", Help: "x"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "icehub_turn_relayed_bytes_total", Help: "x"}, []string{"direction"})
	bindings := prometheus.NewCounter(prometheus.CounterOpts{Name: "icehub_turn_stun_bindings_total", Help: "x"})
	reg.MustRegister(active, bytes, bindings)
	clk := &clock{t: time.UnixMilli(1_700_000_000_000)}
	p := newPage(Config{Gatherer: reg}, clk.now)

	active.Set(3)
	bytes.WithLabelValues("to_peer").Add(250_000)   // 1 Mbit/s over 2 s
	bytes.WithLabelValues("to_client").Add(500_000) // 2 Mbit/s
	bindings.Add(40)                                // 20/s
	clk.t = clk.t.Add(2 * time.Second)
	p.sample()

	var st statusJSON
	getJSON(t, p, "/api/status", &st)
	if len(st.T) != 2 {
		t.Fatalf("%d samples, want 2", len(st.T))
	}
	want := map[string]float64{"allocations": 3, "to_peer_bps": 1e6, "to_client_bps": 2e6, "bindings_per_s": 20}
	for k, v := range want {
		col := st.Values[k]
		if len(col) != 2 || col[1] == nil || *col[1] != v {
			t.Fatalf("%s = %v, want last %v", k, col, v)
		}
	}
	if r := st.Values["to_peer_bps"][0]; r != nil {
		t.Fatalf("first sample has a rate %v: nothing to compare it with", *r)
	}
	if ws := st.Values["websockets"]; ws[1] != nil {
		t.Fatalf("websockets %v without the metric, want null", *ws[1])
	}
	// ?since returns only newer samples, for polling.
	getJSON(t, p, "/api/status?since="+itoa(st.T[0]), &st)
	if len(st.T) != 1 {
		t.Fatalf("since: %d samples, want 1", len(st.T))
	}
}

func TestHistoryIsBounded(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	p := newPage(Config{Gatherer: prometheus.NewRegistry(), History: 5}, clk.now)
	for range 20 {
		clk.t = clk.t.Add(time.Second)
		p.sample()
	}
	var st statusJSON
	getJSON(t, p, "/api/status", &st)
	if len(st.T) != 5 || st.T[4] != clk.t.UnixMilli() {
		t.Fatalf("samples %v, want the last 5", st.T)
	}
}

func TestAllocationsBusiestFirst(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	start := clk.t.Add(-time.Minute)
	allocs := []Allocation{
		{User: "quiet", Relay: "198.51.100.1:50000", RelayTransport: "udp", Start: start, BytesToPeer: 1000},
		{User: "busy", Relay: "198.51.100.1:50002", RelayTransport: "udp", Start: start, BytesToPeer: 1000},
	}
	for i := range 150 {
		allocs = append(allocs, Allocation{User: "idle" + itoa(int64(i)), Relay: "198.51.100.2:" + itoa(int64(1000+i)), RelayTransport: "udp", Start: start})
	}
	p := newPage(Config{Gatherer: prometheus.NewRegistry(), Allocations: func() []Allocation { return allocs }}, clk.now)
	var a allocationsJSON
	getJSON(t, p, "/api/allocations", &a)
	if a.Total != 152 || len(a.Allocations) != defaultRows {
		t.Fatalf("total %d rows %d", a.Total, len(a.Allocations))
	}
	// Over the next two seconds "busy" sends 250 kB: 1 Mbit/s; "quiet" nothing.
	allocs[1].BytesToPeer += 250_000
	clk.t = clk.t.Add(2 * time.Second)
	getJSON(t, p, "/api/allocations?n=1000", &a)
	if len(a.Allocations) != maxRows {
		t.Fatalf("%d rows for n=1000, want the cap %d", len(a.Allocations), maxRows)
	}
	top, second := a.Allocations[0], a.Allocations[1]
	if top.User != "busy" || top.ToPeerBPS != 1e6 || second.User != "quiet" || second.ToPeerBPS != 0 {
		t.Fatalf("top rows %+v, %+v", top, second)
	}
	if top.AgeS != 62 {
		t.Fatalf("age %v s, want 62", top.AgeS)
	}
}

// A DNS-rebinding page in the operator's browser reaches the admin port under its own host
// name: refused. IP addresses and localhost (ssh -L) are what operators use.
func TestRebindingHostsRefused(t *testing.T) {
	p := newPage(Config{Gatherer: prometheus.NewRegistry()}, time.Now)
	for host, ok := range map[string]bool{
		"127.0.0.1:9641": true, "[::1]:9641": true, "localhost:9641": true, "LOCALHOST": true,
		"192.0.2.10": true, "evil.example:9641": false, "127.0.0.1.nip.io:9641": false, "": false,
	} {
		for _, path := range []string{"/", "/api/status", "/api/allocations", "/status.js"} {
			w := serve(t, p, path, host)
			if got := w.Code == 200; got != ok {
				t.Errorf("Host %q %s: %d", host, path, w.Code)
			}
			if ok && !strings.Contains(w.Header().Get("Content-Security-Policy"), "script-src 'self'") {
				t.Errorf("%s: no CSP", path)
			}
		}
	}
}

// The page is self-contained (no CDN, no other origin) and builds the DOM from text only.
func TestPageIsSelfContained(t *testing.T) {
	p := newPage(Config{Gatherer: prometheus.NewRegistry()}, time.Now)
	for _, path := range []string{"/", "/status.js", "/status.css"} {
		w := serve(t, p, path, "localhost")
		body, _ := io.ReadAll(w.Body)
		if w.Code != 200 || len(body) == 0 {
			t.Fatalf("%s: %d", path, w.Code)
		}
		s := string(body)
		for _, bad := range []string{"src=\"http", "href=\"http", "src=\"//", "@import", "url(", "innerHTML", "outerHTML",
			"insertAdjacentHTML", "document.write", "eval(", "new Function"} {
			if strings.Contains(s, bad) {
				t.Errorf("%s contains %q", path, bad)
			}
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
