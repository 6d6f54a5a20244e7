package signal

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"icehub/internal/metrictest"
)

func TestOversizedFrameCloses1009(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.MaxFrameBytes = 1024 })
	p := e.connect(t)
	p.join("big")
	p.sendRaw(`{"type":"message","room":"big","data":"` + strings.Repeat("x", 1100) + `"}`)
	if code := p.expectClose(5 * time.Second); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	eventually(t, 2*time.Second, "frame-too-large counted", func() bool {
		return metrictest.Value(t, e.reg, "icehub_signal_errors_total", map[string]string{"code": CodeFrameTooLarge}) == 1
	})
}

func TestSlowConsumerDroppedRoomKeepsFlowing(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) {
		s.MaxPeersPerRoom = 3
		s.SendQueue = 16
		s.MessagesPerSecond = 0 // unlimited: this test is about the send side
	})
	a, stalled, c := e.connect(t), e.connect(t), e.connect(t)
	a.join("slow")
	stalled.join("slow")
	c.join("slow")
	a.expect("peer-joined")
	a.expect("peer-joined")
	// stalled never reads again from here on.

	payload := `"` + strings.Repeat("p", 32<<10) + `"`
	left := ""
	for i := 0; i < 2000 && left == ""; i++ {
		a.sendRaw(fmt.Sprintf(`{"type":"message","room":"slow","data":{"i":%d,"p":%s}}`, i, payload))
		// c reads every message before the next is sent, so it is never the one lagging.
		for {
			f, err := c.read(5 * time.Second)
			if err != nil {
				t.Fatalf("reader peer, message %d: %v", i, err)
			}
			if f.Type == "peer-left" {
				left = f.ID
				continue
			}
			if f.Type != "message" || !strings.HasPrefix(string(f.Data), fmt.Sprintf(`{"i":%d,`, i)) {
				t.Fatalf("message %d: got %s %.40s", i, f.Type, f.Data)
			}
			break
		}
	}
	if left != stalled.id {
		t.Fatalf("peer-left for %q, want the stalled peer %s", left, stalled.id)
	}
	if got := metrictest.Value(t, e.reg, "icehub_signal_dropped_slow_total", nil); got != 1 {
		t.Fatalf("dropped_slow_total = %v", got)
	}
	// The room goes on for the others.
	a.send(map[string]any{"type": "message", "room": "slow", "data": "after"})
	if f := c.expect("message"); string(f.Data) != `"after"` {
		t.Fatalf("after drop got %s", f.Data)
	}
}

// expectSkipping reads frames of type skip until one of type typ arrives.
func (p *peer) expectSkipping(typ, skip string) frame {
	p.t.Helper()
	for {
		f, err := p.read(5 * time.Second)
		if err != nil {
			p.t.Fatalf("waiting for %q: %v", typ, err)
		}
		if f.Type == typ {
			return f
		}
		if f.Type != skip {
			p.t.Fatalf("got %+v while waiting for %q", f, typ)
		}
	}
}

func TestRateLimitThenFloodClose(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) {
		s.MessagesPerSecond = 0.5
		s.MessageBurst = 3
	})
	p := e.connect(t)
	for range 4 {
		p.send(map[string]string{"type": "ice-servers"})
	}
	for range 3 {
		p.expect("ice-servers")
	}
	p.expectError(CodeRateLimited)
	// Keep going well past 4×burst dropped frames: a flood, closed as a policy violation.
	for range 4*3 + 5 {
		if err := p.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"ice-servers"}`)); err != nil {
			break // the hub may already have closed
		}
	}
	if code := p.expectClose(5 * time.Second); code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
}

func TestConnLimitPerIP(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.MaxConnsPerIP = 2 })
	a := e.connect(t)
	e.connect(t)
	_, resp, err := e.dialRaw(t, "", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third connection: err %v resp %v, want 429", err, resp)
	}
	_ = a.conn.Close()
	eventually(t, 5*time.Second, "slot freed", func() bool {
		conn, _, err := e.dialRaw(t, "", nil)
		if err == nil {
			_ = conn.Close()
		}
		return err == nil
	})
}

// downRooms is a room store whose backend is unreachable.
type downRooms struct{}

func (downRooms) Join(context.Context, string, string, int, Deliver) ([]string, error) {
	return nil, fmt.Errorf("redis: %w", ErrUnavailable)
}
func (downRooms) Leave(context.Context, string, string) error { return ErrUnavailable }
func (downRooms) Publish(context.Context, string, string, string, []byte) error {
	return ErrUnavailable
}

func TestClusterUnavailable(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	e.hub.rooms = downRooms{}
	p := e.connect(t)
	p.send(map[string]string{"type": "join", "room": "r"})
	if f := p.expectError(CodeClusterUnavailable); f.Room != "r" || f.Request != "join" {
		t.Fatalf("error = %+v", f)
	}
}

func TestShutdownGoingAway(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	p := e.connect(t)
	p.join("r")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.hub.Shutdown(ctx) }()
	if code := p.expectClose(5 * time.Second); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, resp, err := e.dialRaw(t, "", nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after shutdown: %v %v", err, resp)
	}
}

func TestPingReapsDeadPeer(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) {
		s.PingInterval = 100 * time.Millisecond
		s.ResumeWindow = 0 // resume off: the reaped peer leaves at once
	})
	a := e.connect(t)
	a.join("r")
	// A peer that never answers pings: its pong handler is replaced and it never reads, so
	// gorilla never replies.
	conn, _, err := e.dialRaw(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var w frame
	if err := conn.ReadJSON(&w); err != nil {
		t.Fatal(err)
	}
	if err := conn.WriteJSON(map[string]string{"type": "join", "room": "r"}); err != nil {
		t.Fatal(err)
	}
	a.expect("peer-joined")
	// Read deadline = 2×ping + 1s; the dead peer is gone within it.
	f, err := a.read(10 * time.Second)
	if err != nil || f.Type != "peer-left" || f.ID != w.ID {
		t.Fatalf("got %+v, %v; want peer-left for the dead peer", f, err)
	}
}

// A ping flood gets what a message flood gets (issue 11): 200 000 pings, sent as fast as the
// socket takes them (at most 20 s), end in a close for flooding long before the last.
func TestPingFloodClosed(t *testing.T) {
	e := newEnv(t, time.Hour, nil) // 50 frames/s, burst 100
	p := e.connect(t)
	start := time.Now()
	sent := 0
	for ; sent < 200000 && time.Since(start) < 20*time.Second; sent++ {
		if err := p.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)); err != nil {
			break
		}
	}
	if sent == 200000 {
		t.Fatalf("all 200 000 pings were taken in %v", time.Since(start))
	}
	if got := metrictest.Value(t, e.reg, "icehub_signal_errors_total", map[string]string{"code": CodeRateLimited}); got < 1 {
		t.Fatalf("no rate-limited error counted (%v) after %d pings", got, sent)
	}
	// The connection is over: a close frame (1008) or, with pings still unread, a reset.
	for {
		_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := p.conn.ReadMessage()
		if err == nil {
			continue
		}
		if isTimeout(err) {
			t.Fatalf("the connection is still open after %d pings", sent)
		}
		if ce, ok := err.(*websocket.CloseError); ok && ce.Code != websocket.ClosePolicyViolation && ce.Code != websocket.CloseAbnormalClosure {
			t.Fatalf("closed with %d, want 1008", ce.Code)
		}
		break
	}
	t.Logf("closed after %d pings in %v", sent, time.Since(start).Round(time.Millisecond))
}
