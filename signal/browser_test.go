package signal

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"icehub/auth"
	"icehub/turnserver"
)

// startTURN runs icehub's TURN server on loopback and returns the ICE URLs to hand out.
// Both browsers' relay candidates are the server's own relay addresses, which its peer
// filter lets relay to each other even though they are loopback.
func startTURN(t *testing.T, ring *auth.Ring) []string {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := turnserver.New(turnserver.Config{
		Listen:     []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Realm:      "icehub",
		RelayPorts: turnserver.PortRange{Min: 63000, Max: 63999}, // above the ephemeral ports
		UDPSockets: 1,
		Ring:       ring,
		Logger:     log,
		Settings:   turnserver.Settings{MaxAllocationsPerUser: 10, MaxAllocations: 100, AnswerAllowance: 8192, AnswerRefill: 512},
	})
	if err != nil {
		t.Fatalf("starting TURN server: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	port := srv.Addrs()[0].(*net.UDPAddr).Port
	return []string{
		fmt.Sprintf("stun:127.0.0.1:%d", port),
		fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", port),
	}
}

type pairType struct {
	Local  string `json:"local"`
	Remote string `json:"remote"`
}

// TestBrowserCallThroughRelay: two call.html pages meet in a room through /ws, negotiate
// with iceTransportPolicy "relay" on the credentials from welcome, chat both ways over a
// data channel, and getStats shows a relay-relay candidate pair on both sides.
func TestBrowserCallThroughRelay(t *testing.T) {
	ring := newTestRing(t)
	e := newEnvWith(t, time.Hour, startTURN(t, ring), ring, nil)
	b := launchBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	url := e.srv.URL + "/call.html?room=browser-room&relay=1&autostart=1&video=0"
	pa := b.open(ctx, "A", url)
	pa.waitFor(ctx, "A joined", `window.icehub && icehub.state === 'waiting for peer'`)
	pb := b.open(ctx, "B", url)
	for _, p := range []*page{pa, pb} {
		p.waitFor(ctx, "data channel open", `icehub.dcOpen`)
		// The page uses the TURN credentials the hub minted for its own peer id.
		var ok bool
		if err := p.eval(ctx, `icehub.iceServers.some(s => s.username && s.username.endsWith(':' + icehub.id))`, &ok); err != nil || !ok {
			t.Fatalf("%s: iceServers not from welcome (%v)", p.name, err)
		}
	}
	for _, m := range []struct {
		from, to *page
		text     string
	}{{pa, pb, "hello from A"}, {pb, pa, "hello from B"}} {
		var sent bool
		if err := m.from.eval(ctx, fmt.Sprintf("icehub.send(%q)", m.text), &sent); err != nil || !sent {
			t.Fatalf("%s: send: %v %v", m.from.name, sent, err)
		}
		m.to.waitFor(ctx, "chat message", fmt.Sprintf("icehub.lastMessage === %q", m.text))
	}
	for _, p := range []*page{pa, pb} {
		var pt pairType
		p.waitFor(ctx, "a selected candidate pair", `icehub.selectedPairType().then(p => p !== null)`)
		if err := p.eval(ctx, `icehub.selectedPairType()`, &pt); err != nil {
			t.Fatal(err)
		}
		if pt.Local != "relay" || pt.Remote != "relay" {
			t.Fatalf("%s: selected pair %+v, want relay/relay", p.name, pt)
		}
	}
}

// TestBrowserLoopbackVideo runs the tutorial's one-page call with a fake camera, relayed
// through TURN, and waits for the receiving side to decode video frames.
func TestBrowserLoopbackVideo(t *testing.T) {
	ring := newTestRing(t)
	e := newEnvWith(t, time.Hour, startTURN(t, ring), ring, nil)
	b := launchBrowser(t, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	p := b.open(ctx, "loopback", e.srv.URL+"/loopback.html?autostart=1&relay=1")
	p.waitFor(ctx, "connected", `window.icehub && icehub.state === 'connected'`)
	p.waitFor(ctx, "decoded frames", `icehub.framesDecoded().then(n => n > 0)`)
	var pt pairType
	if err := p.eval(ctx, `icehub.selectedPairType()`, &pt); err != nil {
		t.Fatal(err)
	}
	if pt.Local != "relay" || pt.Remote != "relay" {
		t.Fatalf("selected pair %+v, want relay/relay", pt)
	}
}
