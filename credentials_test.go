package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"icehub/auth"
)

type iceEntry struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username"`
	Credential string   `json:"credential"`
}

// turnEntry picks the entry carrying credentials and checks it points at this server.
func turnEntry(t *testing.T, raw []byte, turnPort int) iceEntry {
	t.Helper()
	var servers []iceEntry
	if err := json.Unmarshal(raw, &servers); err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		if s.Username != "" {
			if !strings.Contains(strings.Join(s.URLs, " "), fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", turnPort)) {
				t.Fatalf("TURN urls %v do not point at this server", s.URLs)
			}
			return s
		}
	}
	t.Fatalf("no TURN entry with credentials in %s", raw)
	return iceEntry{}
}

func TestHubCredentialsAllocateUntilTheyExpire(t *testing.T) {
	// Expiries are whole seconds, cut down: 5s credentials are valid for 4 to 5 s, time for
	// the allocations below on a loaded machine (2s ones could be valid for barely 1 s).
	p := startIcehub(t, "auth.ttl = \"5s\"\nturn.allow_peers = [\"127.0.0.1/32\"]\n")
	peer := echoPeer(t)

	ws := dialHub(t, p.signal)
	fromWelcome := turnEntry(t, ws.ice, p.turn)
	if strings.Contains(fromWelcome.Username, ws.id) {
		t.Fatalf("welcome credentials %q are for the peer id %s, which every room member sees", fromWelcome.Username, ws.id)
	}

	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/ice-servers", p.signal))
	if err != nil {
		t.Fatal(err)
	}
	var api struct {
		ICEServers json.RawMessage `json:"iceServers"`
		TTL        int             `json:"ttl"`
	}
	json.NewDecoder(resp.Body).Decode(&api)
	resp.Body.Close()
	if api.TTL != 5 {
		t.Fatalf("ttl %d, want 5", api.TTL)
	}
	fromAPI := turnEntry(t, api.ICEServers, p.turn)

	for name, e := range map[string]iceEntry{"welcome": fromWelcome, "api": fromAPI} {
		r, err := allocate(t, p.turn, e.Username, e.Credential)
		if err != nil {
			t.Fatalf("%s credentials refused: %v", name, err)
		}
		if err := r.echo(peer, []byte(name)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}

	// The hub renews before expiry, unasked.
	renewed := ws.expect("ice-servers")
	raw, _ := json.Marshal(renewed["iceServers"])
	next := turnEntry(t, raw, p.turn)
	if next.Username == fromWelcome.Username {
		t.Fatal("pushed credentials are the same as the expiring ones")
	}

	// Once the expiry in each username has passed (plus a second for clock granularity),
	// neither set allocates.
	for name, e := range map[string]iceEntry{"welcome": fromWelcome, "api": fromAPI} {
		exp, _, err := auth.Parse(e.Username)
		if err != nil {
			t.Fatalf("%s username %q: %v", name, e.Username, err)
		}
		time.Sleep(time.Until(exp.Add(time.Second)))
		if _, err := allocate(t, p.turn, e.Username, e.Credential); err == nil {
			t.Fatalf("%s credentials still allocate after their TTL", name)
		}
	}
}

// Issue 11 point 3: a room member learns the victim's peer id and asks /api/turn for
// credentials in that name, as many as the per-user quota (10): it must not take the
// victim's allocations away.
func TestRoomMemberCannotSpendAnothersTURNQuota(t *testing.T) {
	p := startIcehub(t, "")
	victim, attacker := dialHub(t, p.signal), dialHub(t, p.signal)
	victim.send(map[string]any{"type": "join", "room": "call"})
	victim.expect("joined")
	attacker.send(map[string]any{"type": "join", "room": "call"})
	joined := attacker.expect("joined")
	peers, _ := joined["peers"].([]any)
	if len(peers) != 1 || peers[0] != victim.id {
		t.Fatalf("the attacker should see the victim's id: %v", joined)
	}
	for range 10 {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/turn?service=turn&username=%s", p.signal, victim.id))
		if err != nil {
			t.Fatal(err)
		}
		var cr struct{ Username, Password string }
		json.NewDecoder(resp.Body).Decode(&cr)
		resp.Body.Close()
		if _, err := allocate(t, p.turn, cr.Username, cr.Password); err != nil {
			t.Fatalf("attacker's own allocation: %v", err)
		}
	}
	mine := turnEntry(t, victim.ice, p.turn)
	if _, err := allocate(t, p.turn, mine.Username, mine.Credential); err != nil {
		t.Fatalf("the victim cannot allocate with its own credentials: %v", err)
	}
}
