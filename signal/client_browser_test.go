package signal

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"icehub/auth"
	"icehub/config"
	"icehub/internal/testenv"
	"icehub/turnserver"
)

// Browser proofs of issue 14: calls built on icehub.js survive the network. Two pages of one
// headless Chromium call each other through the hub and the TURN server; the tests cut a
// page's WebSocket, restart the whole stack, and make both sides offer at once.

// recorderJS keeps a page's hub and call events, with Date.now() stamps that the test can
// compare with its own clock (same machine, same wall clock).
const recorderJS = `(() => {
	window.rec = [];
	const push = (kind, e) => rec.push({t: Date.now(), kind, ...e});
	demo.hub.on('state', e => push('hub-state', e));
	demo.hub.on('welcome', e => push('welcome', e));
	demo.hub.on('peer-left', e => push('peer-left', e));
	demo.hub.on('message', e => { if (!e.data.call) push('message', e); });
	demo.call.on('state', e => push('call-state', e));
	demo.call.on('restart', e => push('restart', e));
	return true;
})()`

// traceJS makes demo.hub keep a trace of the call signaling it sends and receives, in
// window.trace, for failure messages: "12.3 > offer:ufrag", "13.0 < cand:ufrag", ...
const traceJS = `(() => {
	window.trace = [];
	const short = d => !d.call ? 'app' : Object.keys(d.call).filter(k => k !== 'sid' && k !== 'to').map(k =>
		k === 'description' ? d.call[k].type + ':' + /a=ice-ufrag:(\S+)/.exec(d.call[k].sdp)?.[1] :
		k === 'candidate' ? 'cand:' + d.call[k].usernameFragment : k).join(',');
	const now = () => performance.now().toFixed(1);
	demo.hub.on('message', m => trace.push(now() + ' < ' + short(m.data)));
	const send = demo.hub.send.bind(demo.hub);
	demo.hub.send = (room, data, opts) => { trace.push(now() + ' > ' + short(data)); return send(room, data, opts); };
})()`

// ufragJS evaluates to the ICE username fragment of a session description.
func ufragJS(desc string) string {
	return fmt.Sprintf(`((/a=ice-ufrag:(\S+)/.exec((%s || {}).sdp || '') || [])[1] || null)`, desc)
}

type recEvent struct {
	T        int64           `json:"t"`
	Kind     string          `json:"kind"`
	State    string          `json:"state"`
	ID       string          `json:"id"`
	Resumed  bool            `json:"resumed"`
	Data     json.RawMessage `json:"data"`
	Reason   string          `json:"reason"`
	Previous string          `json:"previousId"`
}

func (p *page) events(ctx context.Context) []recEvent {
	p.b.t.Helper()
	var ev []recEvent
	p.mustEval(ctx, `rec`, &ev)
	return ev
}

// callSnapshot is what a page's call looks like at one moment.
type callSnapshot struct {
	HubID         string `json:"hubID"`
	State         string `json:"state"`
	LocalUfrag    string `json:"localUfrag"`
	RemoteUfrag   string `json:"remoteUfrag"`
	Signaling     string `json:"signaling"`
	Polite        bool   `json:"polite"`
	FramesDecoded int    `json:"framesDecoded"`
	LocalAddress  string `json:"localAddress"`
	RemoteAddress string `json:"remoteAddress"`
	Local         string `json:"local"`
	Remote        string `json:"remote"`
	Counters      struct {
		PCs           int `json:"pcs"`
		Offers        int `json:"offers"`
		Collisions    int `json:"collisions"`
		IgnoredOffers int `json:"ignoredOffers"`
		Rollbacks     int `json:"rollbacks"`
		ICERestarts   int `json:"iceRestarts"`
	} `json:"counters"`
}

func (p *page) snapshot(ctx context.Context) callSnapshot {
	p.b.t.Helper()
	var s callSnapshot
	p.mustEval(ctx, `demo.call.stats().then(s => ({
		hubID: demo.hub.id, state: demo.call.state, polite: demo.call.polite, counters: demo.call.counters,
		signaling: demo.call.pc.signalingState,
		localUfrag: `+ufragJS("demo.call.pc.localDescription")+`,
		remoteUfrag: `+ufragJS("demo.call.pc.remoteDescription")+`,
		framesDecoded: s.framesDecoded, local: s.local, remote: s.remote,
		localAddress: s.localAddress, remoteAddress: s.remoteAddress}))`, &s)
	return s
}

// waitCall waits until a call.html page's call is connected and decoding the other's video.
func waitCall(ctx context.Context, p *page) {
	p.b.t.Helper()
	p.waitFor(ctx, "call connected", `window.demo && demo.call && demo.call.state === 'connected'`)
	p.waitFor(ctx, "decoded frames", `demo.call.stats().then(s => s.framesDecoded > 10)`)
}

// TestBrowserCallGlare: both pages start a call at the same moment, so both send offers and
// each receives the other's while its own is outstanding. Perfect negotiation must settle on
// one connection: the impolite side ignores the offer it got, the polite side rolls its own
// back and answers, and both end up with one RTCPeerConnection describing the same session.
func TestBrowserCallGlare(t *testing.T) {
	ring := newTestRing(t)
	e := newEnvWith(t, time.Hour, startTURN(t, ring), ring, nil)
	hubAddr := strings.TrimPrefix(e.srv.URL, "http://")
	proxies := []*cutProxy{newCutProxy(t, hubAddr), newCutProxy(t, hubAddr)}
	b := launchBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var pages []*page
	for i, name := range []string{"A", "B"} {
		p := b.open(ctx, name, proxies[i].url()+"/index.html")
		p.waitFor(ctx, "page loaded", `document.readyState === 'complete'`)
		// What an application does: import the library from the hub, connect, join.
		p.mustEval(ctx, `import('/icehub.js').then(async m => {
			window.icehubjs = m;
			window.demo = {hub: m.connect(), call: null};
			`+traceJS+`;
			await demo.hub.join('glare');
			return true;
		})`, nil)
		pages = append(pages, p)
	}
	for _, p := range pages {
		p.waitFor(ctx, "the other peer in the room", `demo.hub.peers('glare').length === 1`)
	}
	// Each page's greeting reaches the other only when both have started: the two calls
	// then discover each other at the same instant and make their offers together.
	for _, px := range proxies {
		px.hold(true)
	}
	for _, p := range pages {
		p.mustEval(ctx, `(demo.call = icehubjs.call(demo.hub, 'glare', {relayOnly: true}), true)`, nil)
	}
	eventually(t, 10*time.Second, "both greetings on their way", func() bool {
		return proxies[0].holding() > 0 && proxies[1].holding() > 0
	})
	for _, px := range proxies {
		px.hold(false)
	}
	for i, p := range pages {
		if !p.waitUntil(ctx, 20*time.Second, `demo.call.state === 'connected' && demo.call.channel.readyState === 'open'`) {
			p.fatalf("call not connected; the other page: %s", pages[1-i].debugState())
		}
		p.mustEval(ctx, `(demo.call.channel.onmessage = e => { window.got = e.data; }, true)`, nil)
	}
	for i, p := range pages {
		other := pages[1-i]
		p.mustEval(ctx, fmt.Sprintf(`(demo.call.channel.send('from %s'), true)`, p.name), nil)
		other.waitFor(ctx, "data channel message", fmt.Sprintf(`window.got === 'from %s'`, p.name))
	}

	a, bb := pages[0].snapshot(ctx), pages[1].snapshot(ctx)
	t.Logf("A: %+v", a)
	t.Logf("B: %+v", bb)
	if a.Polite == bb.Polite {
		t.Fatalf("both sides polite=%v: the roles must differ", a.Polite)
	}
	polite, impolite := a, bb
	if bb.Polite {
		polite, impolite = bb, a
	}
	if impolite.Counters.IgnoredOffers < 1 || polite.Counters.Rollbacks < 1 {
		t.Fatalf("no glare resolved: impolite ignored %d offers, polite rolled back %d; the offers did not collide",
			impolite.Counters.IgnoredOffers, polite.Counters.Rollbacks)
	}
	for _, s := range []callSnapshot{a, bb} {
		if s.Counters.PCs != 1 || s.Signaling != "stable" || s.State != "connected" {
			t.Fatalf("want one connected RTCPeerConnection in a stable state, got %+v", s)
		}
	}
	if a.LocalUfrag == "" || a.LocalUfrag != bb.RemoteUfrag || bb.LocalUfrag != a.RemoteUfrag {
		t.Fatalf("the sides disagree on the session: A %s/%s, B %s/%s", a.LocalUfrag, a.RemoteUfrag, bb.LocalUfrag, bb.RemoteUfrag)
	}
	if a.Local != "relay" || a.LocalAddress != bb.RemoteAddress || bb.LocalAddress != a.RemoteAddress {
		t.Fatalf("the sides use different candidate pairs: A %s→%s, B %s→%s", a.LocalAddress, a.RemoteAddress, bb.LocalAddress, bb.RemoteAddress)
	}
}

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
	sig := config.Default().Signal
	sig.PingInterval = config.Duration{Duration: 5 * time.Second}
	h, err := New(Config{Signal: sig, Ring: ring, TTL: time.Hour, ICEURLs: urls})
	if err != nil {
		t.Fatal(err)
	}
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
// a relay-only video call. Media keeps flowing through TURN; A resumes its session with the
// same id within a second; B never hears peer-left; a message B sends to A during the gap and
// one A sends during the gap both arrive.
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

	cutAt := time.Now().UnixMilli()
	proxyA.cut()
	var sentAt int64
	pb.mustEval(ctx, fmt.Sprintf(`(demo.hub.send('cut', {text: 'sent in the gap'}, {to: %q}), Date.now())`, a0.HubID), &sentAt)
	var queued bool
	if pa.mustEval(ctx, `demo.hub.send('cut', {text: 'queued in the gap'})`, &queued); !queued {
		pa.fatalf("send while disconnected was refused")
	}

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
	t.Logf("A resumed %d ms after the cut (noticed it after %d ms)", welcome.T-cutAt, lost.T-cutAt)
	if welcome.T-cutAt > 1000 {
		pa.fatalf("resumed %d ms after the cut, want within a second", welcome.T-cutAt)
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
