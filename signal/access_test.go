package signal

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestOriginOnUpgrade(t *testing.T) {
	cases := []struct {
		name    string
		allowed []string
		origin  string // "SELF" = the server's own origin
		want    int    // 101 or an HTTP error status
	}{
		{"no origin", nil, "", 101},
		{"same origin", nil, "SELF", 101},
		{"localhost any port", nil, "http://localhost:9999", 101},
		{"loopback v4 https", nil, "https://127.0.0.1:1", 101},
		{"loopback v6", nil, "http://[::1]:8080", 101},
		{"foreign", nil, "https://evil.example", 403},
		{"opaque origin", nil, "null", 403},
		{"listed", []string{"https://app.example"}, "https://app.example", 101},
		{"listed, case", []string{"https://App.Example"}, "https://app.example", 101},
		{"list replaces localhost", []string{"https://app.example"}, "http://localhost:9999", 403},
		{"list keeps same origin", []string{"https://app.example"}, "SELF", 101},
		{"scheme matters", []string{"https://app.example"}, "http://app.example", 403},
		{"star", []string{"*"}, "https://anything.example", 101},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, time.Hour, func(s *Settings) { s.AllowedOrigins = tc.allowed })
			hdr := http.Header{}
			switch tc.origin {
			case "":
			case "SELF":
				hdr.Set("Origin", e.srv.URL)
			default:
				hdr.Set("Origin", tc.origin)
			}
			_, resp, err := e.dialRaw(t, "", hdr)
			got := 101
			if err != nil {
				if resp == nil {
					t.Fatalf("dial: %v", err)
				}
				got = resp.StatusCode
			}
			if got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
}

func TestAPIKeys(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.APIKeys = []string{"k-one", "k-two"} })
	cases := []struct {
		name, query, auth string
		want              int
	}{
		{"none", "", "", 401},
		{"wrong query", "?key=nope", "", 401},
		{"query", "?key=k-two", "", 200},
		{"bearer", "", "Bearer k-one", 200},
		{"bearer lower", "", "bearer k-one", 200},
		{"wrong bearer", "", "Bearer k-on", 401},
		{"basic", "", "Basic azpvbmU=", 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.auth != "" {
				hdr.Set("Authorization", tc.auth)
			}
			// The WebSocket...
			_, resp, err := e.dialRaw(t, tc.query, hdr)
			got := 200
			if err != nil {
				if resp == nil {
					t.Fatal(err)
				}
				got = resp.StatusCode
			}
			if got != tc.want {
				t.Fatalf("/ws status %d, want %d", got, tc.want)
			}
			// ...and the API.
			for _, path := range []string{"/api/ice-servers", "/api/turn"} {
				q := tc.query
				if path == "/api/turn" {
					q = "?service=turn" + strings.Replace(q, "?", "&", 1)
				}
				req, _ := http.NewRequest("GET", e.srv.URL+path+q, nil)
				req.Header = hdr.Clone()
				r, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				r.Body.Close()
				if r.StatusCode != tc.want {
					t.Fatalf("%s status %d, want %d", path, r.StatusCode, tc.want)
				}
			}
		})
	}
	// Health and pages stay open.
	for _, path := range []string{"/healthz", "/", "/call.html", "/loopback.html"} {
		r, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Fatalf("%s status %d", path, r.StatusCode)
		}
	}
}

func TestCORS(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) {
		s.AllowedOrigins = []string{"https://app.example"}
		s.APIKeys = []string{"key"}
	})
	do := func(method, origin string, hdr map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, e.srv.URL+"/api/ice-servers", nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r
	}
	pre := do("OPTIONS", "https://app.example", map[string]string{
		"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization",
	})
	if pre.StatusCode != 204 || pre.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(strings.ToLower(pre.Header.Get("Access-Control-Allow-Headers")), "authorization") {
		t.Fatalf("preflight: %d %v", pre.StatusCode, pre.Header)
	}
	ok := do("GET", "https://app.example", map[string]string{"Authorization": "Bearer key"})
	if ok.StatusCode != 200 || ok.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("allowed GET: %d %v", ok.StatusCode, ok.Header)
	}
	for _, m := range []string{"GET", "OPTIONS"} {
		bad := do(m, "https://evil.example", map[string]string{"Authorization": "Bearer key"})
		if bad.StatusCode != 403 || bad.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("foreign %s: %d %v", m, bad.StatusCode, bad.Header)
		}
	}
	if r := do("POST", "", map[string]string{"Authorization": "Bearer key"}); r.StatusCode != 405 {
		t.Fatalf("POST: %d", r.StatusCode)
	}
}

func TestAPIRateLimitPerIP(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) {
		s.MessagesPerSecond = 0.1
		s.MessageBurst = 2
	})
	var codes []int
	for range 3 {
		r, err := http.Get(e.srv.URL + "/api/ice-servers")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		codes = append(codes, r.StatusCode)
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 {
		t.Fatalf("statuses %v, want [200 200 429]", codes)
	}
}

func TestReloadAppliesLive(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	p := e.connect(t)
	sig := DefaultSettings()
	sig.APIKeys = []string{"fresh"}
	sig.MessagesPerSecond = 0.1
	sig.MessageBurst = 1
	if err := e.hub.Reload(sig); err != nil {
		t.Fatal(err)
	}
	if _, resp, err := e.dialRaw(t, "", nil); err == nil || resp.StatusCode != 401 {
		t.Fatalf("dial without the new key: %v", err)
	}
	if _, _, err := e.dialRaw(t, "?key=fresh", nil); err != nil {
		t.Fatalf("dial with the new key: %v", err)
	}
	// The open connection got the new message rate.
	p.send(map[string]string{"type": "ice-servers"})
	p.send(map[string]string{"type": "ice-servers"})
	p.expect("ice-servers")
	p.expectError(CodeRateLimited)
	if err := e.hub.Reload(Settings{AllowedOrigins: []string{"not a url"}}); err == nil {
		t.Fatal("Reload accepted a bad origin")
	}
}

func TestHealthzAndPages(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	get := func(path string) (int, string) {
		r, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	code, body := get("/")
	if code != 200 || !strings.Contains(body, "loopback.html") || !strings.Contains(body, "call.html") {
		t.Fatalf("/ = %d, links missing", code)
	}
	for _, p := range []string{"/loopback.html", "/call.html"} {
		if code, body := get(p); code != 200 || !strings.Contains(body, "/api/ice-servers") && !strings.Contains(body, "/ws") {
			t.Fatalf("%s = %d", p, code)
		}
	}
	if code, _ := get("/nope.html"); code != 404 {
		t.Fatalf("/nope.html = %d", code)
	}
}

// TestSameOriginOverTLS: behind TLS the page's origin is https://host and still matches the
// request's Host, even when allowed_origins lists only other sites.
func TestSameOriginOverTLS(t *testing.T) {
	h, err := New(Config{
		Settings: func() Settings {
			s := DefaultSettings()
			s.AllowedOrigins = []string{"https://app.example"}
			return s
		}(),
		Ring: newTestRing(t), TTL: time.Hour, ICEURLs: testICE,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(h.Handler())
	defer srv.Close()
	defer h.Shutdown(context.Background())
	d := websocket.Dialer{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig}
	wsURL := "wss" + strings.TrimPrefix(srv.URL, "https") + "/ws"
	conn, _, err := d.Dial(wsURL, http.Header{"Origin": {srv.URL}})
	if err != nil {
		t.Fatalf("same-origin wss: %v", err)
	}
	conn.Close()
	_, resp, err := d.Dial(wsURL, http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("foreign origin over wss: %v", err)
	}
}

// DNS rebinding: the attacker's name resolves to the hub, so its page's requests carry the
// attacker's name as both Origin and Host. Same origin must be judged from what the hub
// knows of itself, not from the Host header.
func TestDNSRebindingRefused(t *testing.T) {
	for _, allowed := range [][]string{nil, {"https://app.example"}} {
		e := newEnv(t, time.Hour, func(s *Settings) { s.AllowedOrigins = allowed })
		_, port, _ := strings.Cut(strings.TrimPrefix(e.srv.URL, "http://"), ":")
		for _, host := range []string{"evil.example:" + port, "evil.example"} {
			origin := "http://" + host
			_, resp, err := e.dialRaw(t, "", http.Header{"Origin": {origin}, "Host": {host}})
			if err == nil || resp == nil || resp.StatusCode != 403 {
				t.Fatalf("allowed %v: /ws with Origin and Host %s: %v %v", allowed, host, resp, err)
			}
			req, _ := http.NewRequest("GET", e.srv.URL+"/api/ice-servers", nil)
			req.Host = host
			req.Header.Set("Origin", origin)
			r, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != 403 {
				t.Fatalf("allowed %v: /api/ice-servers with Origin and Host %s: %d", allowed, host, r.StatusCode)
			}
		}
	}
}

// What the hub does count as its own origins, with allowed_origins listing only another site.
func TestOwnOrigins(t *testing.T) {
	ring := newTestRing(t)
	e := newEnvWith(t, time.Hour, []string{"stun:turn.example.org:3478", "turn:[2001:DB8::1]:3478?transport=udp", "turn:{host}:3478"}, ring,
		func(s *Settings) {
			s.AllowedOrigins = []string{"https://app.example"}
			s.PublicOrigins = []string{"https://call.example.org"}
			s.Hostnames = []string{"Hub.Example.NET", "192.0.2.7"}
		})
	_, port, _ := strings.Cut(strings.TrimPrefix(e.srv.URL, "http://"), ":")
	cases := map[string]int{
		e.srv.URL:                          101, // the address and port the request arrived on
		"http://localhost:" + port:         101, // localhost, over loopback, on the port
		"http://127.0.0.1:1":               403, // another port of this address is another origin
		"http://localhost:1":               403,
		"https://call.example.org":         101, // public_origins
		"http://call.example.org":          403, // ... exactly as listed
		"https://turn.example.org:8443":    101, // an ICE URL's host
		"https://[2001:db8::1]":            101,
		"https://hub.example.net":          101, // Hostnames (the certificate's names)
		"http://192.0.2.7:8080":            101,
		"https://app.example":              101, // allowed_origins
		"https://evil.example":             403,
		"http://{host}:3478":               403,
		"https://turn.example.org.evil.io": 403,
	}
	for origin, want := range cases {
		if got := e.originStatus(t, origin); got != want {
			t.Errorf("Origin %s: %d, want %d", origin, got, want)
		}
	}
}
