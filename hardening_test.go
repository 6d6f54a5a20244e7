package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/stun/v4"

	"icehub/auth"
	"icehub/internal/testenv"
)

// Process-level hardening tests against the built binary: the server's own ports as relay
// targets, garbage on every port, slow HTTP headers, the descriptor limit, Redis dying
// mid-traffic, and a short soak that must leave goroutines and descriptors at baseline.

const hardSecret = "hardening-secret-0123"

func hardCreds(t *testing.T, user string) auth.Credentials {
	t.Helper()
	ring, err := auth.NewRing(auth.Config{Secrets: []string{hardSecret}})
	if err != nil {
		t.Fatal(err)
	}
	cr, err := ring.Mint(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cr
}

// startIcehubWrapped is startIcehub run under a wrapper command (e.g. prlimit).
func startIcehubWrapped(t *testing.T, wrapper []string, extra string) *proc {
	t.Helper()
	return startIcehubOpts(t, opts{extra: extra, wrapper: wrapper})
}

// adminMetric reads one unlabelled (or exactly labelled, "name{k=\"v\"}") series; 0 when absent.
func adminMetric(t *testing.T, p *proc, series string) float64 {
	t.Helper()
	return scrape(t, p)[series]
}

func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// pid is the icehub process (the wrapper, prlimit, execs it, so the PID is the same).
func (p *proc) pid() int { return p.cmd.Process.Pid }

// clientToClient allocates two relays for user and checks they reach each other: the
// default filter's own-relay exception, so it needs no allow_peers.
func clientToClient(t *testing.T, p *proc, user string) {
	t.Helper()
	cr := hardCreds(t, user)
	a, err := allocate(t, p.turn, cr.Username, cr.Password)
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	b, err := allocate(t, p.turn, cr.Username, cr.Password)
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	if err := a.client.CreatePermission(b.conn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := b.client.CreatePermission(a.conn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	for try := 0; ; try++ {
		if _, err := a.conn.WriteTo([]byte("c2c"), b.conn.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		b.conn.SetReadDeadline(time.Now().Add(time.Second))
		if n, _, err := b.conn.ReadFrom(buf); err == nil && string(buf[:n]) == "c2c" {
			break
		}
		if try == 4 {
			t.Fatal("relay to relay: nothing arrived")
		}
	}
	a.conn.Close()
	b.conn.Close()
	a.client.Close()
	b.client.Close()
}

// roomTalk connects two WebSocket peers, joins them to room and passes a message.
func roomTalk(t *testing.T, p *proc, room string) {
	t.Helper()
	a, b := dialHub(t, p.signal), dialHub(t, p.signal)
	a.send(map[string]any{"type": "join", "room": room})
	a.expect("joined")
	b.send(map[string]any{"type": "join", "room": room})
	b.expect("joined")
	a.expect("peer-joined")
	a.send(map[string]any{"type": "message", "room": room, "data": "hello"})
	if m := b.expect("message"); m["data"] != "hello" {
		t.Fatalf("got %v", m)
	}
	a.c.Close()
	b.c.Close()
}

// TestHardeningOwnPortsRefused: with the default filter, a client with valid credentials
// cannot relay into the server's own TURN, signaling and admin ports (UDP and TCP Connect):
// 127.0.0.1 is the relay's own IP, so the permission is granted, but every datagram to those
// ports is dropped (nothing answers the Binding request sent to the TURN port) and every
// Connect is refused.
func TestHardeningOwnPortsRefused(t *testing.T) {
	p := startIcehub(t, fmt.Sprintf("auth.secrets = [%q]\n", hardSecret))
	cr := hardCreds(t, "mallory")
	r, err := allocate(t, p.turn, cr.Username, cr.Password)
	if err != nil {
		t.Fatal(err)
	}
	probe := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	for _, port := range []int{p.turn, p.signal, p.admin} {
		dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
		for range 3 {
			if _, err := r.conn.WriteTo(probe, dst); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 1500)
	if n, from, err := r.conn.ReadFrom(buf); err == nil {
		t.Fatalf("relay got %d bytes back from %s: the server relayed into its own port", n, from)
	}

	c, conn := tcpTURNClient(t, p.turn, cr)
	defer conn.Close()
	defer c.Close()
	alloc, err := c.AllocateTCP()
	if err != nil {
		t.Fatalf("AllocateTCP: %v", err)
	}
	defer alloc.Close()
	for _, port := range []int{p.turn, p.signal, p.admin} {
		if _, err := alloc.Connect(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err == nil {
			t.Fatalf("Connect to the server's own port %d succeeded", port)
		} else {
			t.Logf("Connect 127.0.0.1:%d: %v", port, err)
		}
	}
	// Other loopback addresses are refused at the permission level and counted.
	before := adminMetric(t, p, `icehub_turn_peer_refused_total{range="loopback"}`)
	if err := r.client.CreatePermission(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: p.signal}); err == nil {
		t.Fatal("CreatePermission 127.0.0.2 granted")
	}
	if got := adminMetric(t, p, `icehub_turn_peer_refused_total{range="loopback"}`); got <= before {
		t.Fatalf("peer_refused_total{range=loopback} %v -> %v", before, got)
	}
}

// TestHardeningGarbageOnEveryPort sends random bytes to the signaling, admin and TURN TCP
// ports and random datagrams to the TURN UDP port, then checks both halves still serve.
func TestHardeningGarbageOnEveryPort(t *testing.T) {
	p := startIcehub(t, fmt.Sprintf("auth.secrets = [%q]\n", hardSecret))
	random := func(n int) []byte { b := make([]byte, n); _, _ = rand.Read(b); return b }
	for _, port := range []int{p.signal, p.admin, p.turn} {
		for i := range 20 {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
			if err != nil {
				t.Fatalf("port %d: %v", port, err)
			}
			_, _ = c.Write(random(1 + i*500))
			if i%2 == 0 {
				_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: " + strings.Repeat("x", 70000) + "\r\n\r\n"))
			}
			c.Close()
		}
	}
	u, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", p.turn))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		_, _ = u.Write(random(1 + i*3))
	}
	u.Close()
	roomTalk(t, p, "after-garbage")
	clientToClient(t, p, "after-garbage")
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", p.admin))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin healthz: %v %v", err, resp)
	}
	resp.Body.Close()
}

// TestHardeningSlowloris trickles request headers on 100 connections to the signaling port,
// one byte per 300 ms: the hub keeps serving WebSocket peers meanwhile, and closes the slow
// connections once serve.go's ReadHeaderTimeout (10 s) passes.
func TestHardeningSlowloris(t *testing.T) {
	t.Parallel()
	p := startIcehub(t, fmt.Sprintf("auth.secrets = [%q]\n", hardSecret))
	const n = 100
	req := []byte("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		strings.Repeat("X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 20))
	closedAt := make(chan time.Duration, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%50))}
		d := net.Dialer{LocalAddr: src, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.signal))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < len(req) && time.Since(start) < 20*time.Second; k++ {
				if _, err := c.Write(req[k : k+1]); err != nil {
					closedAt <- time.Since(start)
					return
				}
				// A read with a short deadline notices the server's close (EOF or a 408).
				c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if _, err := c.Read(make([]byte, 512)); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
					closedAt <- time.Since(start)
					return
				}
			}
		}()
	}
	// Meanwhile ordinary peers come and go.
	for i := range 3 {
		roomTalk(t, p, "during-slowloris-"+strconv.Itoa(i))
		time.Sleep(time.Second)
	}
	wg.Wait()
	close(closedAt)
	var times []time.Duration
	for d := range closedAt {
		times = append(times, d)
	}
	if len(times) != n {
		t.Fatalf("only %d of %d slow connections were closed within 20s", len(times), n)
	}
	for _, d := range times {
		if d < 9*time.Second {
			t.Fatalf("a slow connection was closed after %v, before ReadHeaderTimeout", d)
		}
	}
	roomTalk(t, p, "after-slowloris")
}

// TestHardeningFDLimit runs icehub with RLIMIT_NOFILE 64 (prlimit), opens WebSockets until
// the server runs out of descriptors, checks it does not crash and that a TURN allocation
// is refused with 508 rather than hanging, then closes them and checks the hub accepts
// WebSockets and TURN allocates and relays again.
func TestHardeningFDLimit(t *testing.T) {
	prlimit := testenv.Tool(t, "prlimit", "util-linux")
	p := startIcehubWrapped(t, []string{prlimit, "--nofile=64:64"},
		fmt.Sprintf("auth.secrets = [%q]\nsignal.max_conns_per_ip = 0\n", hardSecret))
	base := openFDs(t, p.pid())
	conns := exhaustFDs(t, p)
	t.Logf("base %d descriptors; %d WebSockets open at exhaustion; now %d", base, len(conns), openFDs(t, p.pid()))
	cr := hardCreds(t, "at-the-limit")
	if _, err := allocate(t, p.turn, cr.Username, cr.Password); stunCode(err) != 508 {
		t.Fatalf("allocate with no descriptors left: %v, want 508", err)
	}
	for _, c := range conns {
		c.Close()
	}
	select {
	case <-p.exited:
		t.Fatalf("icehub exited at the descriptor limit: %v", p.err)
	default:
	}
	deadline := time.Now().Add(10 * time.Second)
	for openFDs(t, p.pid()) > base+4 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	roomTalk(t, p, "after-emfile")
	clientToClient(t, p, "after-emfile")
}

// exhaustFDs opens WebSockets to p until one fails (at most 200) and returns the open ones;
// it fails the test if the limit was never reached.
func exhaustFDs(t *testing.T, p *proc) []*websocket.Conn {
	t.Helper()
	var conns []*websocket.Conn
	hdr := http.Header{"Origin": {fmt.Sprintf("http://127.0.0.1:%d", p.signal)}}
	d := websocket.Dialer{HandshakeTimeout: 2 * time.Second}
	for range 200 {
		c, _, err := d.Dial(fmt.Sprintf("ws://127.0.0.1:%d/ws", p.signal), hdr)
		if err != nil {
			return conns
		}
		conns = append(conns, c)
	}
	t.Fatalf("opened %d WebSockets without reaching the descriptor limit", len(conns))
	return nil
}

func stunCode(err error) int {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	var tv stun.TurnError
	if errors.As(err, &tv) {
		return int(tv.ErrorCodeAttr.Code)
	}
	return 0
}

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
