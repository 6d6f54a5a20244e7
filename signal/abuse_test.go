package signal

import (
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"icehub/internal/metrictest"
)

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestTenThousandRoomsBoundedMemory opens 10 000 rooms (100 connections × 100 rooms) in
// the in-process hub and checks the heap grows by a bounded amount per room, the room
// count follows, and everything is released when the connections go and their resume
// window passes.
func TestTenThousandRoomsBoundedMemory(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) {
		s.MaxRoomsPerConn = 100
		s.MaxConnsPerIP = 0
		s.MessagesPerSecond = 0
		// The connections drop without a goodbye, so their sessions are parked first: the
		// rooms must still all go once the window passes.
		s.ResumeWindow = time.Second
	})
	base := heapInUse()
	baseG := runtime.NumGoroutine()
	const conns, perConn = 100, 100
	peers := make([]*peer, conns)
	for i := range peers {
		peers[i] = e.connect(t)
	}
	for i, p := range peers {
		for k := range perConn {
			p.send(map[string]string{"type": "join", "room": fmt.Sprintf("r-%d-%d", i, k)})
		}
	}
	for _, p := range peers {
		for range perConn {
			p.expect("joined")
		}
	}
	if n := e.hub.roomCount(); n != conns*perConn {
		t.Fatalf("room count %v, want %d", n, conns*perConn)
	}
	grown := int64(heapInUse()) - int64(base)
	perRoom := grown / (conns * perConn)
	t.Logf("10 000 rooms over %d connections: heap +%d KiB, %d bytes per room (connections included)", conns, grown>>10, perRoom)
	if perRoom > 8<<10 {
		t.Fatalf("%d bytes of heap per room", perRoom)
	}
	for _, p := range peers {
		_ = p.conn.Close()
	}
	eventually(t, 10*time.Second, "rooms released", func() bool { return e.hub.roomCount() == 0 })
	eventually(t, 10*time.Second, "goroutines released", func() bool { return runtime.NumGoroutine() <= baseG+5 })
	if after := int64(heapInUse()) - int64(base); after > 4<<20 {
		t.Fatalf("heap still +%d KiB after every connection closed", after>>10)
	}
}

// TestJoinFloodOthersUnaffected: a flooder joining hundreds of rooms, one connection
// joining a full room over and over, and 50 connections racing into one room, while a pair
// in another room keeps exchanging messages: every message arrives, in order.
func TestJoinFloodOthersUnaffected(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.MaxConnsPerIP = 0 })
	a, b := e.connect(t), e.connect(t)
	a.join("quiet")
	b.join("quiet")
	a.expect("peer-joined")

	flooder := e.connect(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 600 {
			if flooder.conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"join","room":"f%d"}`, i)) != nil {
				return // closed for flooding: expected
			}
		}
	}()
	racers := make([]*peer, 50)
	for i := range racers {
		racers[i] = e.connect(t)
		racers[i].send(map[string]string{"type": "join", "room": "contested"})
	}
	for i := range 60 { // paced under the default 50 messages/s
		a.send(map[string]any{"type": "message", "room": "quiet", "data": i})
		f := b.expect("message")
		if string(f.Data) != fmt.Sprint(i) {
			t.Fatalf("message %d arrived as %s", i, f.Data)
		}
		time.Sleep(25 * time.Millisecond)
	}
	<-done
	joined := 0
	for _, r := range racers {
		for {
			f, err := r.read(5 * time.Second)
			if err != nil {
				t.Fatalf("racer: %v", err)
			}
			if f.Type == "peer-joined" {
				continue
			}
			if f.Type == "joined" {
				joined++
			} else if f.Type != "full" {
				t.Fatalf("racer got %+v", f)
			}
			break
		}
	}
	if joined != DefaultSettings().MaxPeersPerRoom {
		t.Fatalf("%d of 50 racers joined a room of %d", joined, DefaultSettings().MaxPeersPerRoom)
	}
	if code := flooder.expectClose(10 * time.Second); code != websocket.ClosePolicyViolation {
		t.Fatalf("flooder closed with %d, want 1008", code)
	}
}

// TestManyDeadPeersReaped: 50 connections that never answer pings (and never read) are
// reaped within the pong deadline while a live pair keeps talking, and their goroutines go.
func TestManyDeadPeersReaped(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) {
		s.PingInterval = 200 * time.Millisecond
		s.MaxConnsPerIP = 0
	})
	baseG := runtime.NumGoroutine()
	a, b := e.connect(t), e.connect(t)
	a.join("live")
	b.join("live")
	a.expect("peer-joined")
	// Dead peers: raw TCP that completes the upgrade and then never reads or writes again,
	// so no pong is ever sent.
	u, _ := url.Parse(e.srv.URL)
	var dead []net.Conn
	for range 50 {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		dead = append(dead, c)
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", u.Host)
	}
	defer func() {
		for _, c := range dead {
			c.Close()
		}
	}()
	eventually(t, 5*time.Second, "dead peers connected", func() bool {
		return metrictest.Value(t, e.reg, "icehub_signal_connections", nil) >= 52
	})
	start := time.Now()
	for i := 0; metrictest.Value(t, e.reg, "icehub_signal_connections", nil) > 2; i++ {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("dead peers still connected after 10s: %v", metrictest.Value(t, e.reg, "icehub_signal_connections", nil))
		}
		a.send(map[string]any{"type": "message", "room": "live", "data": i})
		if f := b.expect("message"); string(f.Data) != fmt.Sprint(i) {
			t.Fatalf("live message %d: %s", i, f.Data)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("50 dead peers reaped in %v (ping interval 200ms)", time.Since(start).Round(time.Millisecond))
	eventually(t, 5*time.Second, "goroutines released", func() bool { return runtime.NumGoroutine() <= baseG+12 })
}

// TestHugeDeclaredFrameClosedAtOnce: a frame header declaring 2^62 bytes is refused from the
// header alone (1009), without waiting for or buffering the body.
func TestHugeDeclaredFrameClosedAtOnce(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	p := e.connect(t)
	nc := p.conn.NetConn()
	// FIN + text, masked, 127 = 64-bit length, then the mask key; no payload follows.
	hdr := []byte{0x81, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}
	if _, err := nc.Write(hdr); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if code := p.expectClose(5 * time.Second); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

// FuzzOrigin checks the Origin normalisation the origin check runs on every upgrade and API
// call: never panics, and whatever it accepts is a lower-case http(s)://host[:port].
func FuzzOrigin(f *testing.F) {
	for _, s := range []string{"http://localhost:8080", "https://Example.ORG", "null", "", "http://[::1]:80/",
		"javascript:alert(1)", "http://a/b", "http://user@host", "HTTP://x", " https://x ", "http://%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, o string) {
		n, ok := normOrigin(o)
		if !ok {
			return
		}
		if n != strings.ToLower(n) || !(strings.HasPrefix(n, "http://") || strings.HasPrefix(n, "https://")) {
			t.Fatalf("normOrigin(%q) = %q", o, n)
		}
		if strings.Contains(strings.SplitN(n, "://", 2)[1], "/") {
			t.Fatalf("normOrigin(%q) = %q keeps a path", o, n)
		}
	})
}
