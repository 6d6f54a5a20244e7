// The descriptor limit: icehub under a small RLIMIT_NOFILE keeps serving what it can, tells
// clients why it refuses the rest, and recovers when descriptors come back.
package main

import (
	"fmt"
	"icehub/internal/testenv"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

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

// TestFDExhaustionTURNTCPRecovers: a TCP client that connects to the TURN port while the
// process is out of descriptors must not stop the TURN TCP listener for good. pion's accept
// loop returns on the first Accept error (EMFILE included), so without a retrying listener
// underneath, TURN over TCP (and TLS) stays dead until a restart.
func TestFDExhaustionTURNTCPRecovers(t *testing.T) {
	prlimit := testenv.Tool(t, "prlimit", "util-linux")
	p := startIcehubWrapped(t, []string{prlimit, "--nofile=64:64"},
		fmt.Sprintf("auth.secrets = [%q]\nsignal.max_conns_per_ip = 0\n", hardSecret))
	conns := exhaustFDs(t, p)
	// Knock on the TURN TCP port while no descriptor is free: its Accept fails with EMFILE.
	for range 3 {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.turn), time.Second); err == nil {
			time.Sleep(200 * time.Millisecond)
			c.Close()
		}
	}
	for _, c := range conns {
		c.Close()
	}
	time.Sleep(time.Second)
	// A Binding request over TCP: answered by pion's per-connection reader only if the
	// listener still accepts.
	var lastErr error
	for range 3 {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.turn), 2*time.Second)
		if err != nil {
			lastErr = err
			continue
		}
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		_, _ = conn.Write(req.Raw)
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 1500)
		n, err := conn.Read(buf)
		conn.Close()
		if err == nil && stun.IsMessage(buf[:n]) {
			return
		}
		lastErr = err
	}
	t.Fatalf("TURN over TCP never answered again after descriptor exhaustion: %v", lastErr)
}
