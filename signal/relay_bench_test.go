package signal

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"icehub/auth"
)

// cpuTime is this process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRelayPingPong bounces a message between the two members of each of `pairs` rooms
// through an in-process hub on loopback, as bench/'s signaling mode does across processes.
// Besides ns/op it reports cpu-ns/msg: the process's CPU time (hub and clients together)
// per relayed message, which other load on the machine does not inflate as it does wall
// time. Compare two versions of the hub with the same -benchtime and -count.
func BenchmarkRelayPingPong(b *testing.B) {
	for _, size := range []int{200, 4000} {
		b.Run(fmt.Sprintf("data=%dB", size), func(b *testing.B) { benchRelay(b, 20, size) })
	}
}

func benchRelay(b *testing.B, pairs, size int) {
	ring, err := auth.NewRing(auth.Config{Secrets: []string{testSecret}})
	if err != nil {
		b.Fatal(err)
	}
	s := DefaultSettings()
	s.MaxConnsPerIP, s.MessagesPerSecond = 0, 0
	h, err := New(Config{Settings: s, Ring: ring, TTL: time.Hour, ICEURLs: testICE})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h.Handler())
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	dial := func() *websocket.Conn {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.ReadMessage(); err != nil { // welcome
			b.Fatal(err)
		}
		return c
	}
	join := func(c *websocket.Conn, room string, others int) {
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"`+room+`"}`)); err != nil {
			b.Fatal(err)
		}
		for range 1 + others { // joined, and peer-joined for the one already there
			if _, _, err := c.ReadMessage(); err != nil {
				b.Fatal(err)
			}
		}
	}
	msg := func(room string) []byte {
		return []byte(`{"type":"message","room":"` + room + `","data":{"sdp":"` + strings.Repeat("x", size) + `"}}`)
	}
	type pair struct {
		a, b *websocket.Conn
		m    []byte
	}
	ps := make([]pair, pairs)
	for i := range ps {
		room := fmt.Sprintf("r%d", i)
		ps[i] = pair{a: dial(), b: dial(), m: msg(room)}
		join(ps[i].a, room, 0)
		join(ps[i].b, room, 0)
		if _, _, err := ps[i].a.ReadMessage(); err != nil { // peer-joined
			b.Fatal(err)
		}
	}
	// Each pair bounces its message b.N/pairs times: a→b, b→a, ...
	per := max(b.N/pairs, 1)
	errs := make(chan error, pairs)
	b.ResetTimer()
	cpu0 := cpuTime(b)
	for _, p := range ps {
		go func() {
			from, to := p.a, p.b
			for range per {
				if err := from.WriteMessage(websocket.TextMessage, p.m); err != nil {
					errs <- err
					return
				}
				if _, _, err := to.ReadMessage(); err != nil {
					errs <- err
					return
				}
				from, to = to, from
			}
			errs <- nil
		}()
	}
	for range pairs {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(per*pairs), "cpu-ns/msg")
	for _, p := range ps {
		p.a.Close()
		p.b.Close()
	}
	_ = h.Shutdown(b.Context())
}
