//go:build linux

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"icehub/internal/cdp"
)

// pcHook runs in every page before the page's own scripts. It wraps RTCPeerConnection so the
// test can see each connection the page makes — its configuration, its states, and the
// candidate pair it selected — however the page itself is written. It also gives every
// connection a pre-negotiated data channel (id 1017, so no renegotiation and no help from the
// page) through which the test sends its own messages across the path ICE picked.
const pcHook = `(() => {
  const Orig = window.RTCPeerConnection;
  const lab = window.__natlab = {pcs: [], configs: [], states: [], probes: [], received: []};
  function Wrapped(...args) {
    const pc = new Orig(...args);
    lab.pcs.push(pc);
    lab.configs.push(JSON.parse(JSON.stringify(args[0] || {})));
    const probe = pc.createDataChannel('natlab-probe', {negotiated: true, id: 1017});
    probe.onmessage = e => lab.received.push(e.data);
    lab.probes.push(probe);
    const note = () => {
      lab.states.push(Math.round(performance.now()) + 'ms ' + pc.iceConnectionState + '/' + pc.connectionState);
      // Remembered: a page may restart ICE at once after a failure (icehub.js does).
      if (pc.iceConnectionState === 'failed' || pc.connectionState === 'failed') lab.everFailed = true;
      if (pc.connectionState === 'connected') lab.everConnected = true;
    };
    pc.addEventListener('iceconnectionstatechange', note);
    pc.addEventListener('connectionstatechange', note);
    return pc;
  }
  Wrapped.prototype = Orig.prototype;
  Object.setPrototypeOf(Wrapped, Orig);
  window.RTCPeerConnection = Wrapped;
  lab.send = text => {
    const ch = lab.probes.find(c => c.readyState === 'open');
    if (!ch) return false;
    ch.send(text);
    return true;
  };
  lab.connected = () => lab.pcs.some(pc => pc.connectionState === 'connected');
  lab.failed = () => !!lab.everFailed;
  lab.urls = () => lab.configs.flatMap(c => (c.iceServers || []).flatMap(s => [].concat(s.urls || [])));
  lab.selected = async () => {
    for (const pc of lab.pcs) {
      if (pc.connectionState !== 'connected') continue;
      const stats = await pc.getStats();
      let pair = null;
      stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
      if (!pair) stats.forEach(s => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
      if (!pair) continue;
      const l = stats.get(pair.localCandidateId), r = stats.get(pair.remoteCandidateId);
      return {local: l.candidateType, remote: r.candidateType,
        localAddr: l.address + ':' + l.port, remoteAddr: r.address + ':' + r.port,
        protocol: l.protocol, relayProtocol: l.relayProtocol || ''};
    }
    return null;
  };
})();`

// selectedPair is what lab.selected() returns.
type selectedPair struct {
	Local         string `json:"local"`
	Remote        string `json:"remote"`
	LocalAddr     string `json:"localAddr"`
	RemoteAddr    string `json:"remoteAddr"`
	Protocol      string `json:"protocol"`
	RelayProtocol string `json:"relayProtocol"`
}

func (p selectedPair) String() string {
	via := p.Protocol
	if p.RelayProtocol != "" {
		via += ", relayed over " + p.RelayProtocol
	}
	// Chrome leaves a peer-reflexive candidate's address out of its stats: "?" stands for it.
	hide := func(a string) string {
		if strings.HasPrefix(a, ":") {
			return "?" + a
		}
		return a
	}
	return fmt.Sprintf("%s→%s (%s → %s, %s)", p.Local, p.Remote, hide(p.LocalAddr), hide(p.RemoteAddr), via)
}

// callPage is the two-party demo open in a browser that runs in a client site.
type callPage struct {
	name string
	*cdp.Page
}

// callOpts are the demo page's switches a case sets.
type callOpts struct {
	relayOnly bool // the page's "relay only" switch (iceTransportPolicy "relay")
	video     bool // send video from Chromium's generated camera; off, the page sends no media
}

// openCall starts Chromium inside cl's namespace (trusting the lab's self-signed certificate
// the way a user clicking through would: --ignore-certificate-errors) and opens the demo's
// two-party call page in room.
func openCall(t *testing.T, ctx context.Context, chromium string, cl *site, base, room string, o callOpts) *callPage {
	t.Helper()
	flags := append(cdp.Flags(t.TempDir()), "--ignore-certificate-errors")
	query := "?room=" + room + "&autostart=1&video=0"
	if o.video {
		// A generated camera, granted without asking.
		flags = append(flags, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
		query = strings.Replace(query, "video=0", "video=1", 1)
	}
	if o.relayOnly {
		query += "&relay=1"
	}
	b, err := cdp.Launch(cl.host.Command(context.Background(), chromium, flags...))
	if err != nil {
		t.Fatalf("chromium in %s: %v", cl.name, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	p, err := b.NewPage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddInitScript(ctx, pcHook); err != nil {
		t.Fatal(err)
	}
	if err := p.Navigate(ctx, base+"/call.html"+query); err != nil {
		t.Fatal(err)
	}
	cp := &callPage{name: cl.name, Page: p}
	t.Cleanup(func() {
		if t.Failed() {
			var states []string
			_ = p.Eval(context.Background(), `window.__natlab ? window.__natlab.states : []`, &states)
			t.Logf("%s: connection states %v; console:\n%s", cl.name, states, strings.Join(p.Console(), "\n"))
		}
	})
	return cp
}

// urls returns the ICE server URLs the page handed to RTCPeerConnection.
func (p *callPage) urls(ctx context.Context) []string {
	var u []string
	_ = p.Eval(ctx, `window.__natlab.urls()`, &u)
	return u
}

// selected returns the candidate pair of the page's connected RTCPeerConnection.
func (p *callPage) selected(ctx context.Context) (selectedPair, error) {
	var sp *selectedPair
	if err := p.Eval(ctx, `window.__natlab.selected()`, &sp); err != nil {
		return selectedPair{}, err
	}
	if sp == nil {
		return selectedPair{}, fmt.Errorf("%s: no selected candidate pair", p.name)
	}
	return *sp, nil
}

// demoState is what the demo page's icehub.js session and call look like at one moment.
type demoState struct {
	HubID         string `json:"hubID"`
	Hub           string `json:"hub"`     // Hub.state: connecting, connected, reconnecting, closed
	Resumed       bool   `json:"resumed"` // whether the last welcome resumed the session
	Call          string `json:"call"`    // Call.state: waiting, then the connection's state
	Ufrag         string `json:"ufrag"`   // ICE username fragment of the local description
	PCs           int    `json:"pcs"`     // RTCPeerConnections the call has made
	ICERestarts   int    `json:"iceRestarts"`
	FramesDecoded int    `json:"framesDecoded"` // video frames decoded from the other side
	Local         string `json:"local"`         // the selected pair's candidate types
	Remote        string `json:"remote"`
}

// demoStateJS evaluates to a demoState, or null while the page has no call yet.
const demoStateJS = `(async () => {
  const d = window.demo;
  if (!d || !d.hub || !d.call) return null;
  const s = (await d.call.stats()) || {};
  const sdp = (d.call.pc && d.call.pc.localDescription || {}).sdp || '';
  return {hubID: d.hub.id, hub: d.hub.state, resumed: d.hub.resumed, call: d.call.state,
    ufrag: (/a=ice-ufrag:(\S+)/.exec(sdp) || [])[1] || '', pcs: d.call.counters.pcs,
    iceRestarts: d.call.counters.iceRestarts, framesDecoded: s.framesDecoded || 0,
    local: s.local || '', remote: s.remote || ''};
})()`

// demo returns the page's demoState.
func (p *callPage) demo(ctx context.Context) (demoState, error) {
	var s *demoState
	if err := p.Eval(ctx, demoStateJS, &s); err != nil {
		return demoState{}, fmt.Errorf("%s: %v", p.name, err)
	}
	if s == nil {
		return demoState{}, fmt.Errorf("%s: the page has no call", p.name)
	}
	return *s, nil
}
