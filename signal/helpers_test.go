package signal

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"icehub/auth"
)

const testSecret = "test-secret-0123456789"

var testICE = []string{"stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"}

type testEnv struct {
	hub  *Hub
	srv  *httptest.Server
	ring *auth.Ring
	reg  *prometheus.Registry
}

// newEnv starts a hub on an httptest server; mod adjusts the [signal] config first.
func newEnv(t *testing.T, ttl time.Duration, mod func(*Settings)) *testEnv {
	t.Helper()
	return newEnvWith(t, ttl, testICE, nil, mod)
}

// newEnvWith is newEnv with given ICE URLs and, when ring is not nil, a shared secret ring.
func newEnvWith(t *testing.T, ttl time.Duration, ice []string, ring *auth.Ring, mod func(*Settings)) *testEnv {
	t.Helper()
	sig := DefaultSettings()
	sig.PingInterval = 5 * time.Second
	if mod != nil {
		mod(&sig)
	}
	if ring == nil {
		ring = newTestRing(t)
	}
	return newEnvConfig(t, Config{Settings: sig, Ring: ring, TTL: ttl, ICEURLs: ice})
}

// newEnvConfig starts a hub built from cfg (Registerer is set here).
func newEnvConfig(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.Handler())
	t.Cleanup(func() {
		ctx, cancel := contextWithTimeout(5 * time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		srv.Close()
	})
	return &testEnv{hub: h, srv: srv, ring: cfg.Ring, reg: reg}
}

func (e *testEnv) wsURL() string { return "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/ws" }

// dialRaw dials /ws with extra headers and returns the HTTP response even on failure.
func (e *testEnv) dialRaw(t *testing.T, query string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(e.wsURL()+query, hdr)
	if conn != nil {
		t.Cleanup(func() { _ = conn.Close() })
	}
	return conn, resp, err
}

// peer is a test client that has read its welcome.
type peer struct {
	t       *testing.T
	conn    *websocket.Conn
	id      string
	welcome frame
}

// frame is a decoded hub frame; fields not in a given type stay zero.
type frame struct {
	Type       string          `json:"type"`
	ID         string          `json:"id"`
	Room       string          `json:"room"`
	From       string          `json:"from"`
	Peers      []string        `json:"peers"`
	Data       json.RawMessage `json:"data"`
	Code       string          `json:"code"`
	Message    string          `json:"message"`
	Request    string          `json:"request"`
	TTL        int64           `json:"ttl"`
	ICEServers []ICEServer     `json:"iceServers"`

	Resume       string   `json:"resume"`
	ResumeWindow int64    `json:"resume_window"`
	Resumed      bool     `json:"resumed"`
	Rooms        []string `json:"rooms"`
}

func (e *testEnv) connect(t *testing.T) *peer {
	t.Helper()
	return e.connectQuery(t, "")
}

// resume dials /ws?resume=token and reads the welcome, resumed or not.
func (e *testEnv) resume(t *testing.T, token string) *peer {
	t.Helper()
	return e.connectQuery(t, "?resume="+url.QueryEscape(token))
}

// cut closes the hub's side of peer id's connection without a close frame, as a network
// failure the hub notices would: the session is parked. Browser tests use it too.
func (e *testEnv) cut(t *testing.T, id string) {
	t.Helper()
	e.hub.mu.Lock()
	defer e.hub.mu.Unlock()
	for c := range e.hub.clients {
		if c.id == id {
			_ = c.conn.NetConn().Close()
			return
		}
	}
	t.Fatalf("no connection for peer %s", id)
}

func (e *testEnv) connectQuery(t *testing.T, query string) *peer {
	t.Helper()
	conn, _, err := e.dialRaw(t, query, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	p := &peer{t: t, conn: conn}
	p.welcome = p.expect("welcome")
	p.id = p.welcome.ID
	return p
}

func (p *peer) sendRaw(s string) {
	p.t.Helper()
	_ = p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := p.conn.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

func (p *peer) send(v any) {
	p.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		p.t.Fatal(err)
	}
	p.sendRaw(string(b))
}

// read returns the next frame or an error (close, timeout).
func (p *peer) read(timeout time.Duration) (frame, error) {
	_ = p.conn.SetReadDeadline(time.Now().Add(timeout))
	kind, b, err := p.conn.ReadMessage()
	if err != nil {
		return frame{}, err
	}
	if kind != websocket.TextMessage {
		return frame{}, errors.New("binary frame from hub")
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		return frame{}, err
	}
	return f, nil
}

func (p *peer) expect(typ string) frame {
	p.t.Helper()
	f, err := p.read(5 * time.Second)
	if err != nil {
		p.t.Fatalf("waiting for %q: %v", typ, err)
	}
	if f.Type != typ {
		p.t.Fatalf("got %+v, want type %q", f, typ)
	}
	return f
}

func (p *peer) expectError(code string) frame {
	p.t.Helper()
	f := p.expect("error")
	if f.Code != code {
		p.t.Fatalf("error code %q (%s), want %q", f.Code, f.Message, code)
	}
	return f
}

// expectSilence checks that nothing arrives for d.
func (p *peer) expectSilence(d time.Duration) {
	p.t.Helper()
	if f, err := p.read(d); err == nil {
		p.t.Fatalf("unexpected frame %+v", f)
	} else if !isTimeout(err) {
		p.t.Fatalf("unexpected error %v", err)
	}
	// A read deadline poisons a gorilla conn; callers use expectSilence only last.
}

// expectClose reads until the connection closes and returns the close code (-1 if none).
func (p *peer) expectClose(timeout time.Duration) int {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		_, err := p.read(time.Until(deadline))
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		if isTimeout(err) {
			p.t.Fatalf("connection still open after %s", timeout)
		}
		return -1
	}
	p.t.Fatalf("connection still open after %s", timeout)
	return 0
}

// bye closes the connection the way a client that means to leave does: a close frame
// (1000), then the socket.
func (p *peer) bye() {
	p.t.Helper()
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
	if err := p.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		p.t.Fatalf("close frame: %v", err)
	}
	_ = p.conn.Close()
}

func (p *peer) join(room string) frame {
	p.t.Helper()
	p.send(map[string]string{"type": "join", "room": room})
	return p.expect("joined")
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func newTestRing(t *testing.T) *auth.Ring {
	t.Helper()
	ring, err := auth.NewRing(auth.Config{Secrets: []string{testSecret}})
	if err != nil {
		t.Fatal(err)
	}
	return ring
}
