//go:build unix

package signal

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"icehub/internal/testenv"
)

// requireResume skips (fails under ICEHUB_TEST_REQUIRE_ALL) when the hub's welcome carries no
// resume token: session resume is the server half of issue 14.
func requireResume(t *testing.T, e *testEnv) {
	t.Helper()
	conn, _, err := e.dialRaw(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var w struct {
		Resume string `json:"resume"`
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := conn.ReadJSON(&w); err != nil {
		t.Fatal(err)
	}
	if w.Resume == "" {
		testenv.Skip(t, "the hub does not offer session resume (welcome has no resume token)")
	}
}

// TestBrowserCallSurvivesWebSocketCut: the network resets page A's WebSocket in the middle of
// a relay-only video call, and A's reconnection hangs until the network is back. Media keeps
// flowing through TURN; once the network is back A resumes its session with the same id
// within a second; B never hears peer-left; a message B sends to A during the gap and one A
// sends during the gap both arrive.
func TestBrowserCallSurvivesWebSocketCut(t *testing.T) {
	ring := newTestRing(t)
	e := newEnvWith(t, time.Hour, startTURN(t, ring), ring, nil)
	requireResume(t, e)
	hubAddr := strings.TrimPrefix(e.srv.URL, "http://")
	proxyA, proxyB := newCutProxy(t, hubAddr), newCutProxy(t, hubAddr)
	b := launchBrowser(t, fakeMedia...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const q = "/call.html?room=cut&relay=1&autostart=1"
	pa, pb := b.open(ctx, "A", proxyA.url()+q), b.open(ctx, "B", proxyB.url()+q)
	for _, p := range []*page{pa, pb} {
		waitCall(ctx, p)
		p.mustEval(ctx, recorderJS, nil)
		p.mustEval(ctx, traceJS, nil)
	}
	a0, b0 := pa.snapshot(ctx), pb.snapshot(ctx)

	// The gap lasts until both sides have sent in it: A reconnects 125-250 ms after the cut,
	// and a CDP call into a page decoding video can take longer than that on a loaded machine.
	proxyA.gate(true)
	cutAt := time.Now().UnixMilli()
	proxyA.cut()
	var sentAt int64
	pb.mustEval(ctx, fmt.Sprintf(`(demo.hub.send('cut', {text: 'sent in the gap'}, {to: %q}), Date.now())`, a0.HubID), &sentAt)
	pa.waitFor(ctx, "A to notice the cut", `demo.hub.state === 'reconnecting'`)
	var queued bool
	if pa.mustEval(ctx, `demo.hub.send('cut', {text: 'queued in the gap'})`, &queued); !queued {
		pa.fatalf("send while disconnected was refused")
	}
	// The network comes back once A's reconnection is under way.
	eventually(t, 15*time.Second, "A's reconnection", func() bool { return proxyA.atGate() > 0 })
	backAt := time.Now().UnixMilli()
	proxyA.gate(false)

	pa.waitFor(ctx, "a new welcome", `rec.some(e => e.kind === 'welcome')`)
	var welcome, lost recEvent
	for _, ev := range pa.events(ctx) {
		switch {
		case ev.Kind == "welcome" && welcome.Kind == "":
			welcome = ev
		case ev.Kind == "hub-state" && ev.State == "reconnecting" && lost.Kind == "":
			lost = ev
		}
	}
	if !welcome.Resumed || welcome.ID != a0.HubID {
		pa.fatalf("after the cut: welcome %+v, want the session %s resumed", welcome, a0.HubID)
	}
	if lost.Kind == "" || lost.T > welcome.T {
		pa.fatalf("the page never noticed the cut: %+v", pa.events(ctx))
	}
	t.Logf("A noticed the cut after %d ms; the network was back %d ms after the cut, and A resumed %d ms later",
		lost.T-cutAt, backAt-cutAt, welcome.T-backAt)
	if welcome.T-backAt > 1000 {
		pa.fatalf("resumed %d ms after the network was back, want within a second", welcome.T-backAt)
	}
	if sentAt < cutAt || sentAt > welcome.T {
		t.Fatalf("B's message was not sent during A's gap (cut %d, sent %d, resumed %d)", cutAt, sentAt, welcome.T)
	}
	pa.waitFor(ctx, "B's message from the gap", `rec.some(e => e.kind === 'message' && e.data.text === 'sent in the gap')`)
	pb.waitFor(ctx, "A's message from the gap", `rec.some(e => e.kind === 'message' && e.data.text === 'queued in the gap')`)

	// Media never stopped: B keeps decoding A's video and neither side's ICE ever moved.
	pb.waitFor(ctx, "A's video still decoding", fmt.Sprintf(`demo.call.stats().then(s => s.framesDecoded > %d)`, b0.FramesDecoded+30))
	for _, p := range []*page{pa, pb} {
		for _, ev := range p.events(ctx) {
			if ev.Kind == "peer-left" || ev.Kind == "restart" || ev.Kind == "call-state" {
				p.fatalf("unexpected %s during the cut: %+v", ev.Kind, ev)
			}
		}
	}
	for p, old := range map[*page]callSnapshot{pa: a0, pb: b0} {
		if s := p.snapshot(ctx); s.LocalUfrag != old.LocalUfrag || s.Counters.ICERestarts != old.Counters.ICERestarts || s.State != "connected" {
			p.fatalf("the call changed during the cut: %+v, before %+v", s, old)
		}
	}
}
