//go:build unix

package signal

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// libPage opens a hub page and imports icehub.js into it as window.icehubjs, the way an
// application's own page would.
func libPage(ctx context.Context, b *browser, name, url string) *page {
	p := b.open(ctx, name, url+"/index.html")
	p.waitFor(ctx, "page loaded", `document.readyState === 'complete'`)
	p.mustEval(ctx, `import('/icehub.js').then(m => { window.icehubjs = m; window.seen = []; return true; })`, nil)
	return p
}

// TestBrowserHubLibrary exercises connect()'s room API against the real hub: join answers
// with the peers, messages to the room and to one peer, a full room rejects, leave is heard,
// credentials can be asked for, and close ends the session at once for the others.
func TestBrowserHubLibrary(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	b := launchBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	pages := []*page{libPage(ctx, b, "A", e.srv.URL), libPage(ctx, b, "B", e.srv.URL), libPage(ctx, b, "C", e.srv.URL)}
	ids := make([]string, 3)
	for i, p := range pages {
		p.mustEval(ctx, `(() => {
			window.hub = icehubjs.connect();
			for (const ev of ['peer-joined', 'peer-left', 'message', 'ice-servers', 'error'])
				hub.on(ev, e => seen.push({ev, ...e}));
			return new Promise(resolve => hub.on('welcome', w => resolve(w.id)));
		})()`, &ids[i])
	}
	pa, pb, pc := pages[0], pages[1], pages[2]

	var joined struct {
		Peers []string `json:"peers"`
	}
	pa.mustEval(ctx, `hub.join('lib')`, &joined)
	if len(joined.Peers) != 0 {
		t.Fatalf("A joined an empty room, got peers %v", joined.Peers)
	}
	pb.mustEval(ctx, `hub.join('lib')`, &joined)
	if len(joined.Peers) != 1 || joined.Peers[0] != ids[0] {
		t.Fatalf("B joined with peers %v, want [%s]", joined.Peers, ids[0])
	}
	pa.waitFor(ctx, "peer-joined B", fmt.Sprintf(`seen.some(e => e.ev === 'peer-joined' && e.id === %q)`, ids[1]))

	// The default room holds two: the third is refused with the hub's code.
	var code string
	pc.mustEval(ctx, `hub.join('lib').then(() => 'joined', err => err.code)`, &code)
	if code != "full" {
		t.Fatalf("C joining a full room: %q, want full", code)
	}
	pc.mustEval(ctx, `hub.join('bad room!').then(() => 'joined', err => err.code)`, &code)
	if code != "bad-room" {
		t.Fatalf("C joining a bad room name: %q, want bad-room", code)
	}
	pc.mustEval(ctx, `(() => { try { hub.send('lib', 1); return 'sent'; } catch (err) { return err.code; } })()`, &code)
	if code != "not-member" {
		t.Fatalf("C sending to a room it is not in: %q, want not-member", code)
	}

	pa.mustEval(ctx, `hub.send('lib', {hello: 'room'})`, nil)
	pb.waitFor(ctx, "the room message", fmt.Sprintf(`seen.some(e => e.ev === 'message' && e.from === %q && e.data.hello === 'room')`, ids[0]))
	pb.mustEval(ctx, fmt.Sprintf(`hub.send('lib', {hello: 'A only'}, {to: %q})`, ids[0]), nil)
	pa.waitFor(ctx, "the direct message", fmt.Sprintf(`seen.some(e => e.ev === 'message' && e.from === %q && e.data.hello === 'A only')`, ids[1]))

	var n int
	pa.mustEval(ctx, `hub.refreshIceServers().then(s => s.length)`, &n)
	if n == 0 {
		t.Fatal("refreshIceServers gave no servers")
	}

	pb.mustEval(ctx, `hub.leave('lib').then(() => hub.rooms.length)`, &n)
	if n != 0 {
		t.Fatalf("B still in %d rooms after leave", n)
	}
	pa.waitFor(ctx, "peer-left B", fmt.Sprintf(`seen.some(e => e.ev === 'peer-left' && e.id === %q)`, ids[1]))
	pc.mustEval(ctx, `hub.join('lib').then(r => r.peers.length)`, &n) // there is room again
	if n != 1 {
		t.Fatalf("C joined with %d peers, want 1", n)
	}
	// close ends the session at once: A hears peer-left now, not after a resume window.
	pc.mustEval(ctx, `(hub.close(), hub.state)`, &code)
	if code != "closed" {
		t.Fatalf("state after close: %q", code)
	}
	pa.waitFor(ctx, "peer-left C", fmt.Sprintf(`seen.some(e => e.ev === 'peer-left' && e.id === %q)`, ids[2]))
}

// TestBrowserHubBackoff: with nothing listening, connect() retries with exponentially
// growing, jittered delays up to the cap, and connects once the hub is there.
func TestBrowserHubBackoff(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	b := launchBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := libPage(ctx, b, "A", e.srv.URL)

	// A port that refuses: bound and closed again.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p.mustEval(ctx, fmt.Sprintf(`(() => {
		window.hub = icehubjs.connect('ws://%s/ws', {minDelay: 100, maxDelay: 400});
		hub.on('state', e => seen.push(e));
		return true;
	})()`, dead), nil)
	p.waitFor(ctx, "six attempts", `seen.filter(e => e.state === 'reconnecting').length >= 6`)
	var delays []float64
	p.mustEval(ctx, `(hub.close(), seen.filter(e => e.state === 'reconnecting').map(e => e.delay))`, &delays)
	for i, d := range delays {
		base := min(100*float64(int(1)<<i), 400)
		if d < base/2 || d > base {
			t.Fatalf("attempt %d waited %v ms, want %v–%v (delays %v)", i+1, d, base/2, base, delays)
		}
	}
	// Jitter: the capped delays are not all equal.
	if delays[3] == delays[4] && delays[4] == delays[5] {
		t.Fatalf("capped delays without jitter: %v", delays)
	}
}
