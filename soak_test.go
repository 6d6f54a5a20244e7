package main

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

// TestHardeningSoakChurn is the CI-sized soak: rounds of TURN allocations (UDP and TCP,
// relaying client to client) and WebSocket peers joining, messaging and leaving; afterwards
// the server's goroutines (go_goroutines on /metrics) and open descriptors (/proc/PID/fd)
// return to their baseline within a small tolerance. `go run ./bench soak` is the long one.
func TestHardeningSoakChurn(t *testing.T) {
	p := startIcehub(t, fmt.Sprintf("auth.secrets = [%q]\n", hardSecret))
	round := func(i int) {
		clientToClient(t, p, "soak"+strconv.Itoa(i%3))
		cr := hardCreds(t, "soak-tcp")
		c, conn := tcpTURNClient(t, p.turn, cr)
		a, err := c.AllocateTCP()
		if err != nil {
			t.Fatalf("AllocateTCP: %v", err)
		}
		a.Close()
		c.Close()
		conn.Close()
		for k := range 4 {
			roomTalk(t, p, fmt.Sprintf("soak-%d-%d", i, k))
		}
	}
	round(0) // warm up: lazily started goroutines and buffers
	settle := func(what string, read func() int, base, tol int) int {
		deadline := time.Now().Add(15 * time.Second)
		v := read()
		for v > base+tol && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			v = read()
		}
		if v > base+tol {
			t.Fatalf("%s did not return to baseline: %d, baseline %d (+%d)", what, v, base, tol)
		}
		return v
	}
	gor := func() int { return int(adminMetric(t, p, "go_goroutines")) }
	fds := func() int { return openFDs(t, p.pid()) }
	// Baseline once the warm-up's allocations and connections are gone.
	time.Sleep(500 * time.Millisecond)
	baseG, baseF := gor(), fds()
	for i := 1; i <= 15; i++ {
		round(i)
	}
	mid := gor()
	g := settle("goroutines", gor, baseG, 5)
	f := settle("open descriptors", fds, baseF, 3)
	t.Logf("goroutines %d (peak seen %d, baseline %d); descriptors %d (baseline %d)", g, mid, baseG, f, baseF)
}
