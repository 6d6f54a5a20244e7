//go:build unix

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
	_, urls := startTURNAt(t, ring, "127.0.0.1:0")
	return urls
}

// startTURNAt runs the TURN server on addr (UDP and TCP); the test may close it early.
func startTURNAt(t *testing.T, ring *auth.Ring, addr string) (*turnserver.Server, []string) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := turnserver.New(turnserver.Config{
		Listen:     []netip.AddrPort{netip.MustParseAddrPort(addr)},
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
	return srv, []string{
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
	pa.waitFor(ctx, "A in the room", `window.demo && demo.hub && demo.hub.state === 'connected' && demo.call.state === 'waiting'`)
	pb := b.open(ctx, "B", url)
	for _, p := range []*page{pa, pb} {
		p.waitFor(ctx, "data channel open", `demo.call.channel && demo.call.channel.readyState === 'open'`)
		// The call's RTCPeerConnection uses the TURN credentials the hub handed out.
		var ok bool
		p.mustEval(ctx, `(() => {
			const turn = demo.hub.iceServers.find(s => s.username && s.credential);
			return !!turn && demo.call.pc.getConfiguration().iceServers.some(s =>
				s.username === turn.username && s.credential === turn.credential);
		})()`, &ok)
		if !ok {
			p.fatalf("the call does not use the hub's TURN credentials")
		}
	}
	for _, m := range []struct {
		from, to *page
		text     string
	}{{pa, pb, "hello from A"}, {pb, pa, "hello from B"}} {
		var sent bool
		if m.from.mustEval(ctx, fmt.Sprintf("demo.send(%q)", m.text), &sent); !sent {
			m.from.fatalf("chat send refused")
		}
		m.to.waitFor(ctx, "chat message", fmt.Sprintf("demo.chat.at(-1) === %q", m.text))
	}
	for _, p := range []*page{pa, pb} {
		var pt pairType
		p.waitFor(ctx, "a selected candidate pair", `demo.call.stats().then(s => s && s.local !== null)`)
		p.mustEval(ctx, `demo.call.stats()`, &pt)
		if pt.Local != "relay" || pt.Remote != "relay" {
			p.fatalf("selected pair %+v, want relay/relay", pt)
		}
	}
}

// TestBrowserLoopbackVideo runs the tutorial's one-page call with a fake camera, relayed
// through TURN, and waits for the receiving side to decode video frames.
func TestBrowserLoopbackVideo(t *testing.T) {
	ring := newTestRing(t)
	e := newEnvWith(t, time.Hour, startTURN(t, ring), ring, nil)
	b := launchBrowser(t, fakeMedia...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	p := b.open(ctx, "loopback", e.srv.URL+"/loopback.html?autostart=1&relay=1")
	p.waitFor(ctx, "connected", `window.demo && demo.state === 'connected'`)
	p.waitFor(ctx, "decoded frames", `demo.framesDecoded().then(n => n > 0)`)
	var pt pairType
	p.mustEval(ctx, `demo.selectedPair()`, &pt)
	if pt.Local != "relay" || pt.Remote != "relay" {
		p.fatalf("selected pair %+v, want relay/relay", pt)
	}
}

// fakeMedia gives getUserMedia a generated camera without asking.
var fakeMedia = []string{"--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"}
