//go:build unix

package signal

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"icehub/auth"
	"icehub/turnserver"
)

// stack is an in-process icehub: hub and TURN server on fixed addresses, so that it can be
// stopped and started again where the pages expect it.
type stack struct {
	t        *testing.T
	hub      *Hub
	srv      *http.Server
	turn     *turnserver.Server
	hubAddr  string
	turnAddr string
	stopOnce sync.Once
}

func startStack(t *testing.T, ring *auth.Ring, hubAddr, turnAddr string) *stack {
	t.Helper()
	turn, urls := startTURNAt(t, ring, turnAddr)
	// The hub is the test environment's, served on an address of our choosing.
	h := newEnvWith(t, time.Hour, urls, ring, nil).hub
	ln, err := net.Listen("tcp4", hubAddr)
	if err != nil {
		t.Fatalf("hub listener: %v", err)
	}
	s := &stack{t: t, hub: h, srv: &http.Server{Handler: h.Handler()}, turn: turn,
		hubAddr: ln.Addr().String(), turnAddr: turn.Addrs()[0].String()}
	go func() { _ = s.srv.Serve(ln) }()
	t.Cleanup(s.stop)
	return s
}

// stop is what SIGTERM does to icehub: every WebSocket gets 1001 "going away", then the
// listeners close and every TURN allocation is gone.
func (s *stack) stop() {
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.hub.Shutdown(ctx); err != nil {
			s.t.Errorf("hub shutdown: %v", err)
		}
		_ = s.srv.Close()
		_ = s.turn.Close()
	})
}

// TestBrowserCallSurvivesHubRestart: icehub (hub and TURN server) restarts in the middle of
// a relay-only video call. Both pages reconnect to new sessions, join the room again, find
// each other and restart ICE on fresh allocations; the video decodes again.
func TestBrowserCallSurvivesHubRestart(t *testing.T) {
	ring := newTestRing(t)
	st := startStack(t, ring, "127.0.0.1:0", "127.0.0.1:0")
	b := launchBrowser(t, fakeMedia...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	url := "http://" + st.hubAddr + "/call.html?room=restart&relay=1&autostart=1"
	pages := []*page{b.open(ctx, "A", url), b.open(ctx, "B", url)}
	before := map[*page]callSnapshot{}
	for _, p := range pages {
		waitCall(ctx, p)
		p.mustEval(ctx, recorderJS, nil)
		p.mustEval(ctx, traceJS, nil)
		before[p] = p.snapshot(ctx)
	}

	st.stop()
	for _, p := range pages {
		p.waitFor(ctx, "the hub connection lost", `demo.hub.state === 'reconnecting'`)
	}
	// Down for a second: the pages' first reconnects fail and back off.
	time.Sleep(time.Second)
	st = startStack(t, ring, st.hubAddr, st.turnAddr)
	restarted := time.Now()

	// The bound: the call is back within 10 s of icehub's return.
	rctx, rcancel := context.WithDeadline(ctx, restarted.Add(10*time.Second))
	defer rcancel()
	for i, p := range pages {
		old := before[p]
		p.waitFor(rctx, "a new session", fmt.Sprintf(`demo.hub.state === 'connected' && !demo.hub.resumed && demo.hub.id !== %q`, old.HubID))
		other := pages[1-i]
		other.waitFor(rctx, "a new session", fmt.Sprintf(`demo.hub.state === 'connected' && demo.hub.id !== %q`, before[other].HubID))
		var otherID string
		other.mustEval(rctx, `demo.hub.id`, &otherID)
		p.waitFor(rctx, "the other page back in the room", fmt.Sprintf(`demo.hub.peers('restart').includes(%q)`, otherID))
		p.waitFor(rctx, "ICE restarted and connected", fmt.Sprintf(
			`demo.call.counters.iceRestarts > %d && demo.call.state === 'connected' && %s !== %q`,
			old.Counters.ICERestarts, ufragJS("demo.call.pc.localDescription"), old.LocalUfrag))
	}
	for _, p := range pages {
		n := p.snapshot(rctx).FramesDecoded
		p.waitFor(rctx, "video decoding again", fmt.Sprintf(`demo.call.stats().then(s => s.framesDecoded > %d)`, n+15))
	}
	t.Logf("call recovered %s after icehub came back", time.Since(restarted).Round(10*time.Millisecond))
	for _, p := range pages {
		s := p.snapshot(ctx)
		if s.Counters.PCs != 1 || s.Local != "relay" || s.Remote != "relay" {
			p.fatalf("after the restart: %+v, want the same RTCPeerConnection on a relay pair", s)
		}
		for _, ev := range p.events(ctx) {
			if ev.Kind == "welcome" && ev.Resumed {
				p.fatalf("a restarted hub resumed a session: %+v", ev)
			}
		}
	}
}
