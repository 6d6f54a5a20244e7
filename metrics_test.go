package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

func TestMetricsFollowTraffic(t *testing.T) {
	p := startIcehub(t, "auth.secrets = [\"metrics-secret\"]\nturn.allow_peers = [\"127.0.0.1/32\"]\nturn.max_allocations_per_user = 1\n")
	before := scrape(t, p)
	if before[`icehub_build_info{version="dev"}`] != 1 {
		t.Fatalf("build info missing: %v", before[`icehub_build_info{version="dev"}`])
	}

	// TURN: one allocation relaying 3 round trips, one quota refusal, one bad signature,
	// one refused peer, two STUN bindings.
	cred := mint(t, "metrics-secret", "mia", time.Hour)
	r, err := allocate(t, p.turn, cred.Username, cred.Password)
	if err != nil {
		t.Fatal(err)
	}
	peer := echoPeer(t)
	for i := range 3 {
		if err := r.echo(peer, []byte(fmt.Sprintf("packet-%d-xxxxxxxxxx", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := allocate(t, p.turn, cred.Username, cred.Password); err == nil {
		t.Fatal("second allocation for a user with quota 1 succeeded")
	}
	if _, err := allocate(t, p.turn, cred.Username, "wrong-password"); err == nil {
		t.Fatal("wrong password allocated")
	}
	if err := r.client.CreatePermission(&net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 9}); err == nil {
		t.Fatal("permission to 10.0.0.1 granted")
	}
	conn, _ := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", p.turn))
	defer conn.Close()
	buf := make([]byte, 512)
	for range 2 {
		conn.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Read(buf); err != nil {
			t.Fatal(err)
		}
	}

	// Signaling: two peers in a room, one message.
	a, b := dialHub(t, p.signal), dialHub(t, p.signal)
	a.send(map[string]any{"type": "join", "room": "m"})
	a.expect("joined")
	b.send(map[string]any{"type": "join", "room": "m"})
	b.expect("joined")
	a.expect("peer-joined")
	a.send(map[string]any{"type": "message", "room": "m", "data": "hi"})
	b.expect("message")
	a.send(map[string]any{"type": "nonsense"})
	a.expect("error")

	after := scrape(t, p)
	delta := func(k string) float64 { return after[k] - before[k] }
	checks := []struct {
		key  string
		want float64
		min  bool // at least want, for counters UDP retries may bump
	}{
		{`icehub_turn_allocations_active`, 1, false},
		{`icehub_turn_allocations_total`, 1, false},
		{`icehub_turn_quota_refused_total{kind="user"}`, 1, true}, // a retransmitted Allocate is refused again
		{`icehub_turn_auth_failures_total{reason="bad_signature"}`, 1, true},
		{`icehub_turn_peer_refused_total{range="private"}`, 1, true},
		{`icehub_turn_stun_bindings_total`, 2, true},
		{`icehub_turn_relayed_packets_total{direction="to_peer"}`, 3, true},
		{`icehub_turn_relayed_packets_total{direction="to_client"}`, 3, true},
		{`icehub_turn_relayed_bytes_total{direction="to_peer"}`, 3 * 19, true},
		{`icehub_signal_connections`, 2, false},
		{`icehub_signal_connections_total`, 2, false},
		{`icehub_signal_rooms`, 1, false},
		{`icehub_signal_messages_total`, 1, true},
		{`icehub_signal_errors_total{code="unknown-type"}`, 1, false},
	}
	for _, c := range checks {
		d := delta(c.key)
		if d != c.want && !(c.min && d >= c.want) {
			t.Errorf("%s changed by %v, want %v", c.key, d, c.want)
		}
	}
	if t.Failed() {
		for k, v := range after {
			if strings.HasPrefix(k, "icehub_") {
				t.Logf("%s %v", k, v)
			}
		}
	}
}
