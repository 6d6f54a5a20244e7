package signal

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"
)

// A hub without TURN URLs (STUN only) answers /api/turn 404 and hands out credential-free
// STUN entries; a reload that brings TURN URLs back serves them to new requests at once.
func TestICEURLsReloadAndSTUNOnly(t *testing.T) {
	e := newEnvWith(t, time.Hour, []string{"stun:127.0.0.1:3478"}, nil, nil)
	status := func() int {
		t.Helper()
		r, err := http.Get(e.srv.URL + "/api/turn?service=turn")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if got := status(); got != http.StatusNotFound {
		t.Fatalf("/api/turn without TURN URLs: %d, want 404", got)
	}
	p := e.connect(t)
	if s := p.welcome.ICEServers; len(s) != 1 || s[0].Username != "" || !slices.Equal(s[0].URLs, []string{"stun:127.0.0.1:3478"}) {
		t.Fatalf("STUN-only welcome: %+v", s)
	}
	set := e.hub.Settings()
	set.ICEURLs = testICE
	if err := e.hub.Reload(set); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != http.StatusOK {
		t.Fatalf("/api/turn after the reload: %d, want 200", got)
	}
	p.send(map[string]any{"type": "ice-servers"})
	if f := p.expect("ice-servers"); len(f.ICEServers) != 2 || f.ICEServers[1].Username == "" {
		t.Fatalf("ice-servers after the reload: %+v", f.ICEServers)
	}
	set.ICEURLs = nil // keeps the list in force
	if err := e.hub.Reload(set); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != http.StatusOK {
		t.Fatalf("/api/turn after a reload without ICE URLs: %d, want 200", got)
	}
}

// Restart closes every WebSocket with 1012 "service restart" and refuses new ones.
func TestRestartCloses1012(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	a, b := e.connect(t), e.connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.hub.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*peer{a, b} {
		if code := p.expectClose(5 * time.Second); code != 1012 {
			t.Fatalf("close code %d, want 1012", code)
		}
	}
	if _, resp, err := e.dialRaw(t, "", nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a new WebSocket while restarting: %v %v, want 503", resp, err)
	}
}
