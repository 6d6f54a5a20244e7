//go:build unix

package signal

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Browser proofs of issue 14: calls built on icehub.js survive the network. Two pages of one
// headless Chromium call each other through the hub and the TURN server; the tests make both
// sides offer at once (here), restart the whole stack (restart_browser_test.go) and cut a
// page's WebSocket (cut_browser_test.go). This file has the helpers they share.

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
	p.t.Helper()
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
	p.t.Helper()
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
	p.t.Helper()
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
