package main

import (
	"net/url"
	"syscall"
	"testing"
	"time"
)

// Session resume across two icehub processes sharing rooms through a real redis-server: a
// client whose connection to one node fails comes back on the other with its id, rooms and
// what it missed, whether the first node lives on, was killed, or is shutting down.

// resumeOn reconnects to node port with w's resume token and checks the welcome resumed w's
// session.
func resumeOn(t *testing.T, port int, w *wsClient) *wsClient {
	t.Helper()
	tok, _ := w.welcome["resume"].(string)
	if len(tok) != 64 {
		t.Fatalf("welcome has no resume token: %v", w.welcome)
	}
	r := dialHubQuery(t, port, "?resume="+url.QueryEscape(tok))
	if r.welcome["resumed"] != true || r.id != w.id {
		t.Fatalf("resume on port %d: welcome %v, want session %s resumed", port, r.welcome, w.id)
	}
	return r
}

// joinedPair puts a client on each node in room.
func joinedPair(t *testing.T, a, b *proc, room string) (onA, onB *wsClient) {
	t.Helper()
	onA, onB = dialHub(t, a.signal), dialHub(t, b.signal)
	onA.send(map[string]any{"type": "join", "room": room})
	onA.expect("joined")
	onB.send(map[string]any{"type": "join", "room": room})
	onB.expect("joined")
	onA.expect("peer-joined")
	return onA, onB
}

func expectData(t *testing.T, w *wsClient, from string, data any) {
	t.Helper()
	m := w.expect("message")
	if m["from"] != from || m["data"] != data {
		t.Fatalf("got %v, want %v from %s", m, data, from)
	}
}

func TestClusterResumeAcrossProcesses(t *testing.T) {
	rds := startRedis(t, freePort(t))
	a := clusterNode(t, rds.port, "node-a")
	b := clusterNode(t, rds.port, "node-b")
	onA, onB := joinedPair(t, a, b, "call")

	// The network drops onA's connection (no close frame); node-a parks the session.
	onA.c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for adminMetric(t, a, "icehub_signal_parked_sessions") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("node-a did not park the session")
		}
		time.Sleep(20 * time.Millisecond)
	}
	onB.send(map[string]any{"type": "message", "room": "call", "data": "offer-1"})
	onB.send(map[string]any{"type": "message", "room": "call", "to": onA.id, "data": "offer-2"})

	back := resumeOn(t, b.signal, onA) // on the other node
	if rooms, _ := back.welcome["rooms"].([]any); len(rooms) != 1 || rooms[0] != "call" {
		t.Fatalf("rooms %v", back.welcome["rooms"])
	}
	expectData(t, back, onB.id, "offer-1")
	expectData(t, back, onB.id, "offer-2")
	back.send(map[string]any{"type": "message", "room": "call", "data": "answer"})
	expectData(t, onB, onA.id, "answer") // onB heard no peer-left

	// The spent token gives a new session on either node.
	for _, n := range []*proc{a, b} {
		tok, _ := onA.welcome["resume"].(string)
		again := dialHubQuery(t, n.signal, "?resume="+url.QueryEscape(tok))
		if again.welcome["resumed"] != false || again.id == onA.id {
			t.Fatalf("a used token resumed: %v", again.welcome)
		}
	}
}

// A node that dies (SIGKILL, no goodbye) takes no session with it: its client resumes on the
// other node before the dead node's memberships expire, and the room never hears peer-left.
func TestClusterResumeAfterNodeKilled(t *testing.T) {
	rds := startRedis(t, freePort(t))
	// The resume has to beat the dead node's memberships, which expire member_ttl after its
	// last heartbeat (every member_ttl/3): with 5s, a loaded machine has over 3 s to notice the
	// close, dial node-b and claim; with 2s it had 1.3 s.
	a := clusterNodeTTL(t, rds.port, "node-a", "5s")
	b := clusterNodeTTL(t, rds.port, "node-b", "5s")
	onA, onB := joinedPair(t, a, b, "call")

	a.cmd.Process.Signal(syscall.SIGKILL)
	if code := onA.closed(5 * time.Second); code != -1 && code != 1006 {
		t.Fatalf("connection to the killed node ended with %d", code)
	}
	back := resumeOn(t, b.signal, onA)
	back.send(map[string]any{"type": "message", "room": "call", "data": "still here"})
	expectData(t, onB, onA.id, "still here")
	// node-a's memberships expire by kill+5s and node-b's heartbeat (every 5/3 s) evicts
	// expired ones by kill+6.7s (a second to spare for a slow beat): past that, node-b must
	// not have evicted the moved session.
	onB.quiet(8 * time.Second)
	onB.send(map[string]any{"type": "message", "room": "call", "data": "and you?"})
	expectData(t, back, onB.id, "and you?")
}

// A node that is stopped (SIGTERM) parks its sessions in Redis: a rolling restart moves the
// calls' signaling to the other node without a peer-left.
func TestClusterResumeAfterNodeSIGTERM(t *testing.T) {
	rds := startRedis(t, freePort(t))
	a := clusterNode(t, rds.port, "node-a")
	b := clusterNode(t, rds.port, "node-b")
	onA, onB := joinedPair(t, a, b, "call")

	a.cmd.Process.Signal(syscall.SIGTERM)
	if code := onA.closed(5 * time.Second); code != 1001 {
		t.Fatalf("close code %d, want 1001 going away", code)
	}
	// node-a parks the session before its 1001: the client may resume on node-b at once,
	// with node-a still stopping, and what was sent meanwhile is not lost.
	onB.send(map[string]any{"type": "message", "room": "call", "data": "during restart"})
	back := resumeOn(t, b.signal, onA)
	expectData(t, back, onB.id, "during restart")
	back.send(map[string]any{"type": "message", "room": "call", "data": "moved"})
	expectData(t, onB, onA.id, "moved")
	a.exitWithin(t, 10*time.Second)
}
