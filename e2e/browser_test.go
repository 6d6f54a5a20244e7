//go:build linux

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"icehub/internal/testenv"
)

// browserServer is where the browsers' hub runs: behind the 1:1 NAT with public_ip and no
// hairpin rule, the usual cloud VM. When ICE picks a relay-to-relay pair, the datagrams
// between the two allocations never reach the NAT: icehub hands them over inside the process.
const browserServer = "nat"

// TestNATBrowsers (case 4): two headless Chromiums, each in its own NAT'd namespace, meet in
// the two-party demo (/call.html) through the hub, which serves HTTPS, WSS and TURN over
// TLS on one port, 443. Cone to cone connects directly; symmetric to symmetric connects only
// through the relay (relay to relay too, with the pages' "relay only" switch, through a NAT
// that does not hairpin), and fails when the hub hands out no TURN URLs; a browser that can
// only reach TCP 443 connects to a cone one through turns: on the shared port.
func TestNATBrowsers(t *testing.T) {
	testenv.Long(t)
	chromium := testenv.Chromium(t)
	w := newWorld(t)
	srv := w.servers[browserServer]
	base := "https://" + srv.public

	for _, c := range []struct {
		a, b      string
		noTURN    bool
		relayOnly bool // the page's "relay only" switch (iceTransportPolicy "relay")
		connect   bool
		check     func(t *testing.T, a, b selectedPair)
	}{
		{a: "cone", b: "cone2", connect: true, check: func(t *testing.T, a, b selectedPair) {
			for _, p := range []selectedPair{a, b} {
				if p.Local == "relay" || p.Remote == "relay" {
					t.Fatalf("cone to cone went through the relay (%s); the NATs let a direct path through", p)
				}
			}
		}},
		{a: "sym", b: "sym2", connect: true, check: func(t *testing.T, a, b selectedPair) {
			for _, p := range []selectedPair{a, b} {
				if p.Local != "relay" && p.Remote != "relay" {
					t.Fatalf("symmetric to symmetric without the relay (%s): the NATs should not allow that", p)
				}
			}
		}},
		{a: "sym", b: "sym2", relayOnly: true, connect: true, check: func(t *testing.T, a, b selectedPair) {
			for _, p := range []selectedPair{a, b} {
				if p.Local != "relay" || p.Remote != "relay" {
					t.Fatalf("relay only, yet the pair is %s", p)
				}
			}
		}},
		{a: "sym", b: "sym2", noTURN: true},
		{a: "tcp443", b: "cone", connect: true, check: func(t *testing.T, a, b selectedPair) {
			if a.Local != "relay" || a.RelayProtocol != "tls" {
				t.Fatalf("the TCP-443-only browser's path is %s, want its relay candidate over TLS", a)
			}
		}},
	} {
		name := c.a + "↔" + c.b
		if c.noTURN {
			name += " without TURN URLs"
		}
		if c.relayOnly {
			name += " relay only"
		}
		t.Run(name, func(t *testing.T) {
			o := hubOpts{}
			if c.noTURN {
				o.iceURLs = []string{"stun:" + srv.public + ":3478"}
			}
			startHub(t, srv, o)
			unturned, _ := srv.router.Unturned(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			room := strings.NewReplacer("↔", "-", " ", "-").Replace(name)
			pa := openCall(t, ctx, chromium, w.clients[c.a], base, room, callOpts{relayOnly: c.relayOnly})
			if err := pa.WaitFor(ctx, `window.__natlab.pcs.length > 0 || document.readyState === 'complete'`); err != nil {
				t.Fatalf("%s: page did not load: %v", c.a, err)
			}
			start := time.Now()
			pb := openCall(t, ctx, chromium, w.clients[c.b], base, room, callOpts{relayOnly: c.relayOnly})
			pages := []*callPage{pa, pb}

			if !c.connect {
				for _, p := range pages {
					for _, u := range p.urls(ctx) {
						if strings.HasPrefix(u, "turn") {
							t.Fatalf("%s was handed %s although the hub withholds TURN", p.name, u)
						}
					}
				}
				for _, p := range pages {
					if err := p.WaitFor(ctx, `window.__natlab.failed() || window.__natlab.everConnected`); err != nil {
						t.Fatalf("%s: ICE neither failed nor connected: %v", p.name, err)
					}
					var connected bool
					_ = p.Eval(ctx, `!!window.__natlab.everConnected`, &connected)
					if connected {
						sp, _ := p.selected(ctx)
						t.Fatalf("%s connected without TURN (%s): the test proves nothing", p.name, sp)
					}
				}
				t.Logf("case 4 | %-28s | ICE failed on both sides after %.1fs (urls %v)", name, time.Since(start).Seconds(), pa.urls(ctx))
				return
			}

			for _, p := range pages {
				if err := p.WaitFor(ctx, `window.__natlab.connected()`); err != nil {
					t.Fatalf("%s did not connect: %v", p.name, err)
				}
			}
			// Connected means ICE and DTLS completed; a message each way proves data crosses.
			for _, m := range []struct{ from, to *callPage }{{pa, pb}, {pb, pa}} {
				text := "natlab from " + m.from.name
				if err := m.from.WaitFor(ctx, fmt.Sprintf(`window.__natlab.send(%q)`, text)); err != nil {
					t.Fatalf("%s: the probe channel never opened: %v", m.from.name, err)
				}
				if err := m.to.WaitFor(ctx, fmt.Sprintf(`window.__natlab.received.includes(%q)`, text)); err != nil {
					t.Fatalf("%s never received %q: %v", m.to.name, text, err)
				}
			}
			pairs, err := settledPairs(ctx, pa, pb)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("case 4 | %-28s | connected in %.1fs | %s: %s | %s: %s", name, time.Since(start).Seconds(), c.a, pairs[0], c.b, pairs[1])
			c.check(t, pairs[0], pairs[1])
			// Relay to relay stays inside icehub: nothing for its own address reaches the NAT.
			if n, _ := srv.router.Unturned(context.Background()); n != unturned {
				t.Fatalf("%d datagrams from the server to its own public address reached the NAT", n-unturned)
			}
		})
	}
}

// settledPairs returns the two pages' selected candidate pairs once they describe the same
// path. Until the controlling side's nomination reaches the other, each side reports the
// first pair whose check succeeded there — one side can say relay→relay while the other
// already uses srflx→srflx — so a single sample right after "connected" can be a pair ICE is
// about to drop.
func settledPairs(ctx context.Context, a, b *callPage) ([]selectedPair, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		pa, err := a.selected(ctx)
		if err != nil {
			return nil, err
		}
		pb, err := b.selected(ctx)
		if err != nil {
			return nil, err
		}
		if sameEnd(pa.Local, pa.LocalAddr, pb.Remote, pb.RemoteAddr) && sameEnd(pa.Remote, pa.RemoteAddr, pb.Local, pb.LocalAddr) {
			return []selectedPair{pa, pb}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the two sides never agreed on a path: %s: %s, %s: %s", a.name, pa, b.name, pb)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// sameEnd reports whether one end of a pair as one side sees it (type, address) can be the
// same candidate the other side names: a candidate learned from a connectivity check is
// peer-reflexive ("prflx") to the side that learned it, with its address left out of Chrome's
// stats, whatever the other side calls it.
func sameEnd(typ, addr, otherTyp, otherAddr string) bool {
	if typ == "prflx" || otherTyp == "prflx" {
		return true
	}
	return typ == otherTyp && addr == otherAddr
}
