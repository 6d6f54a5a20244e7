package main

import (
	"fmt"
	"icehub/internal/testenv"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestClusterRoomsAcrossNodes(t *testing.T) {
	rds := startRedis(t, freePort(t))
	a := clusterNode(t, rds.port, "node-a")
	b := clusterNode(t, rds.port, "node-b")

	onA := dialHub(t, a.signal)
	onB := dialHub(t, b.signal)
	onA.send(map[string]any{"type": "join", "room": "r1"})
	if j := onA.expect("joined"); len(j["peers"].([]any)) != 0 {
		t.Fatalf("first joiner sees peers %v", j["peers"])
	}
	onB.send(map[string]any{"type": "join", "room": "r1"})
	j := onB.expect("joined")
	if peers := j["peers"].([]any); len(peers) != 1 || peers[0] != onA.id {
		t.Fatalf("node B joiner sees %v, want [%s]", peers, onA.id)
	}
	if pj := onA.expect("peer-joined"); pj["id"] != onB.id {
		t.Fatalf("peer-joined %v", pj)
	}

	// Messages both ways, to the room and by `to`.
	onA.send(map[string]any{"type": "message", "room": "r1", "data": map[string]any{"sdp": "offer"}})
	if m := onB.expect("message"); m["from"] != onA.id || m["data"].(map[string]any)["sdp"] != "offer" {
		t.Fatalf("B got %v", m)
	}
	onB.send(map[string]any{"type": "message", "room": "r1", "to": onA.id, "data": "answer"})
	if m := onA.expect("message"); m["from"] != onB.id || m["data"] != "answer" {
		t.Fatalf("A got %v", m)
	}

	// Capacity holds cluster-wide: a third peer on either node gets full.
	for _, n := range []*proc{a, b} {
		third := dialHub(t, n.signal)
		third.send(map[string]any{"type": "join", "room": "r1"})
		third.expect("full")
	}

	// Node B dies without a goodbye: A's peer hears peer-left once B's members expire.
	b.cmd.Process.Signal(syscall.SIGKILL)
	start := time.Now()
	if pl := onA.expect("peer-left"); pl["id"] != onB.id {
		t.Fatalf("peer-left %v", pl)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("peer-left came %s after the kill; member_ttl is 2s", d)
	}
	// The seat is free again.
	late := dialHub(t, a.signal)
	late.send(map[string]any{"type": "join", "room": "r1"})
	late.expect("joined")
	onA.expect("peer-joined")
}

func TestClusterSurvivesRedisRestart(t *testing.T) {
	port := freePort(t)
	rds := startRedis(t, port)
	a := clusterNode(t, port, "node-a")
	b := clusterNode(t, port, "node-b")
	onA := dialHub(t, a.signal)
	onB := dialHub(t, b.signal)
	onA.send(map[string]any{"type": "join", "room": "r2"})
	onA.expect("joined")
	onB.send(map[string]any{"type": "join", "room": "r2"})
	onB.expect("joined")
	onA.expect("peer-joined")

	rds.stop()
	// Local connections stay up; joins and cross-node messages fail clearly.
	onA.send(map[string]any{"type": "message", "room": "r2", "data": "x"})
	if e := onA.expect("error"); e["code"] != "cluster-unavailable" {
		t.Fatalf("error %v", e)
	}
	other := dialHub(t, b.signal)
	other.send(map[string]any{"type": "join", "room": "r3"})
	if e := other.expect("error"); e["code"] != "cluster-unavailable" {
		t.Fatalf("error %v", e)
	}

	// Redis comes back (empty: no persistence); icehub reconnects and heartbeats restore the
	// memberships, without a restart of either node.
	startRedis(t, port)
	// Retry until a message crosses; each try carries its own number, and none may arrive twice.
	deadline := time.Now().Add(15 * time.Second)
	seen := map[float64]bool{}
	for try := 1.0; ; try++ {
		onA.send(map[string]any{"type": "message", "room": "r2", "data": try})
		select {
		case m := <-onB.msgs:
			n, _ := m["data"].(float64)
			if m["type"] != "message" || seen[n] {
				t.Fatalf("B got %v (seen before: %v)", m, seen[n])
			}
			seen[n] = true
		case m := <-onA.msgs:
			if m["type"] != "error" || m["code"] != "cluster-unavailable" && m["code"] != "bad-target" {
				t.Fatalf("A got %v", m)
			}
		case <-time.After(300 * time.Millisecond):
		}
		if len(seen) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after redis restart\nA:\n%s", a.Logs())
		}
	}
	// Late copies of earlier tries may still come, but never one number twice.
	end := time.After(time.Second)
	for {
		select {
		case m := <-onB.msgs:
			n, _ := m["data"].(float64)
			if m["type"] != "message" || seen[n] {
				t.Fatalf("B got %v (seen before: %v)", m, seen[n])
			}
			seen[n] = true
		case <-end:
			return
		}
	}
}

func TestClusterRedisKilledMidTraffic(t *testing.T) {
	port := freePort(t)
	rds := startRedis(t, port)
	a := clusterNode(t, port, "node-a")
	b := clusterNode(t, port, "node-b")
	onA, onB := dialHub(t, a.signal), dialHub(t, b.signal)
	onA.send(map[string]any{"type": "join", "room": "live"})
	onA.expect("joined")
	onB.send(map[string]any{"type": "join", "room": "live"})
	onB.expect("joined")
	onA.expect("peer-joined")

	// A streams numbered messages (20/s, under the rate limit) while Redis dies and returns.
	stop := make(chan struct{})
	sent := make(chan int, 1)
	var latest atomic.Int64 // the number of the last message A has begun to send
	go func() {
		n := 0
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				sent <- n
				return
			case <-tick.C:
				n++
				latest.Store(int64(n))
				if onA.c.WriteJSON(map[string]any{"type": "message", "room": "live", "data": n}) != nil {
					sent <- n
					return
				}
			}
		}
	}()
	var got []int
	unavailable := 0
	collect := func(d time.Duration) {
		end := time.After(d)
		for {
			select {
			case m, ok := <-onB.msgs:
				if !ok {
					t.Fatal("B's connection dropped")
				}
				if m["type"] == "message" {
					got = append(got, int(m["data"].(float64)))
				}
			case m, ok := <-onA.msgs:
				if !ok {
					t.Fatal("A's connection dropped")
				}
				if m["type"] == "error" && m["code"] == "cluster-unavailable" {
					unavailable++
				}
			case <-end:
				return
			}
		}
	}
	collect(time.Second)
	before := len(got)
	rds.stop()
	// Messages A sent until now may have crossed before Redis died and still be on their way
	// to B; those sent from now on went to a node without Redis.
	mark := int(latest.Load())
	collect(2 * time.Second)
	during := 0
	for _, n := range got[before:] {
		if n > mark {
			during++
		}
	}
	mid := len(got)
	startRedis(t, port)
	collect(5 * time.Second)
	close(stop)
	total := <-sent
	collect(500 * time.Millisecond)

	if before < 10 {
		t.Fatalf("only %d messages before the kill", before)
	}
	if unavailable == 0 {
		t.Fatal("no cluster-unavailable error while redis was down")
	}
	if during > 0 {
		t.Fatalf("%d messages sent after redis died crossed nodes before it returned (%v, the last sent before the kill was %d)", during, got[before:mid], mark)
	}
	if after := len(got) - mid; after < 20 {
		t.Fatalf("only %d messages after redis returned (sent %d in all)", after, total)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("message %d delivered after %d: duplicate or reordered (%v)", got[i], got[i-1], got)
		}
	}
}

// redisServer is a real redis-server on a loopback port, without persistence.
type redisServer struct {
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

func startRedis(t *testing.T, port int) *redisServer {
	t.Helper()
	path := testenv.Tool(t, "redis-server", "redis-server")
	r := &redisServer{port: port, done: make(chan struct{})}
	r.cmd = exec.Command(path, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", t.TempDir())
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.cmd.Wait(); close(r.done) }()
	t.Cleanup(r.stop)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Write([]byte("PING\r\n"))
			b := make([]byte, 7)
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(b)
			c.Close()
			if strings.HasPrefix(string(b[:n]), "+PONG") {
				return r
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("redis-server did not start")
	return nil
}

func (r *redisServer) stop() {
	r.cmd.Process.Kill()
	<-r.done
}

func clusterNode(t *testing.T, redisPort int, node string) *proc {
	return clusterNodeTTL(t, redisPort, node, "2s")
}

// clusterNodeTTL is clusterNode with another cluster.member_ttl.
func clusterNodeTTL(t *testing.T, redisPort int, node, memberTTL string) *proc {
	return startIcehub(t, fmt.Sprintf(`auth.secrets = ["cluster-shared-secret"]
cluster.redis_url = "redis://127.0.0.1:%d/0"
cluster.member_ttl = %q
cluster.node_id = %q
`, redisPort, memberTTL, node))
}
