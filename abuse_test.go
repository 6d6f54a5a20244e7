// Abuse against the built binary with valid credentials and without: the server's own
// ports as relay targets, garbage on every port, slow HTTP clients.
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

	"github.com/pion/stun/v4"
)

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
