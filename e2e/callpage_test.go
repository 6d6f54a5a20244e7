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

// openCall starts Chromium inside cl's namespace (trusting the lab's self-signed certificate
// the way a user clicking through would: --ignore-certificate-errors) and opens the demo's
// two-party call page in room, with the camera off so no media device is needed; extra
// adds query parameters (relay=1: the page's "relay only" switch).
func openCall(t *testing.T, ctx context.Context, chromium string, cl *site, base, room, extra string) *callPage {
	t.Helper()
	flags := append(cdp.Flags(t.TempDir()), "--ignore-certificate-errors")
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
	if err := p.Navigate(ctx, base+"/call.html?room="+room+"&autostart=1&video=0"+extra); err != nil {
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
