// WebSocket peers on the hub, as the process-level tests drive it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wsClient is a test peer on the hub.
type wsClient struct {
	t       *testing.T
	c       *websocket.Conn
	id      string
	ice     json.RawMessage
	welcome map[string]any
	msgs    chan map[string]any
	err     error // the read error that ended the connection, set before msgs closes
}

func dialHub(t *testing.T, port int) *wsClient {
	t.Helper()
	return dialHubQuery(t, port, "")
}

// dialHubQuery dials /ws with a query string, e.g. "?resume=TOKEN".
func dialHubQuery(t *testing.T, port int, query string) *wsClient {
	t.Helper()
	hdr := http.Header{"Origin": {fmt.Sprintf("http://127.0.0.1:%d", port)}}
	c, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/ws%s", port, query), hdr)
	if err != nil {
		t.Fatal(err)
	}
	w := &wsClient{t: t, c: c, msgs: make(chan map[string]any, 64)}
	t.Cleanup(func() { c.Close() })
	go func() {
		defer close(w.msgs)
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				w.err = err
				return
			}
			var m map[string]any
			if json.Unmarshal(b, &m) == nil {
				w.msgs <- m
			}
		}
	}()
	welcome := w.expect("welcome")
	w.welcome = welcome
	w.id, _ = welcome["id"].(string)
	w.ice, _ = json.Marshal(welcome["iceServers"])
	return w
}

func (w *wsClient) send(v map[string]any) {
	w.t.Helper()
	if err := w.c.WriteJSON(v); err != nil {
		w.t.Fatal(err)
	}
}

// expect returns the next frame, failing unless it has the given type.
func (w *wsClient) expect(typ string) map[string]any {
	w.t.Helper()
	select {
	case m, ok := <-w.msgs:
		if !ok {
			w.t.Fatalf("connection closed while waiting for %q", typ)
		}
		if m["type"] != typ {
			w.t.Fatalf("got %v, want type %q", m, typ)
		}
		return m
	case <-time.After(10 * time.Second):
		w.t.Fatalf("no %q frame within 10s", typ)
	}
	return nil
}

// closed waits for the server to end the connection and returns its close code.
func (w *wsClient) closed(within time.Duration) int {
	w.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case _, ok := <-w.msgs:
			if !ok {
				if ce, ok := w.err.(*websocket.CloseError); ok {
					return ce.Code
				}
				return -1
			}
		case <-deadline:
			w.t.Fatal("connection still open")
		}
	}
}

// quiet asserts no frame arrives for d.
func (w *wsClient) quiet(d time.Duration) {
	w.t.Helper()
	select {
	case m := <-w.msgs:
		w.t.Fatalf("unexpected frame %v", m)
	case <-time.After(d):
	}
}

// roomTalk connects two WebSocket peers, joins them to room and passes a message.
func roomTalk(t *testing.T, p *proc, room string) {
	t.Helper()
	a, b := dialHub(t, p.signal), dialHub(t, p.signal)
	a.send(map[string]any{"type": "join", "room": room})
	a.expect("joined")
	b.send(map[string]any{"type": "join", "room": room})
	b.expect("joined")
	a.expect("peer-joined")
	a.send(map[string]any{"type": "message", "room": room, "data": "hello"})
	if m := b.expect("message"); m["data"] != "hello" {
		t.Fatalf("got %v", m)
	}
	a.c.Close()
	b.c.Close()
}

// closedWithin reads from c until the server closes it and returns how long that took; it
// fails when c is still open after limit.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("still open after %v: %v", limit, err)
	}
	return time.Since(start)
}
