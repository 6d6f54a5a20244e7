package turnserver

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus"

	"icehub/auth"
	"icehub/internal/metrictest"
)

// One address at turn.max_conns_per_ip gets further TCP connections closed at once, while
// its open ones are served and another address still connects.
func TestMaxConnsPerIP(t *testing.T) {
	ts, reg := startServerReg(t, func(c *Config) { c.Settings.MaxConnsPerIP = 5 })
	var open []*streamClient
	for range 5 {
		open = append(open, dialStream(t, ts.tcp, auth.Credentials{}))
	}
	time.Sleep(100 * time.Millisecond) // accepted and counted
	for i := range 3 {
		extra := dialStream(t, ts.tcp, auth.Credentials{})
		if !extra.closedWithin(2 * time.Second) {
			t.Fatalf("connection %d over the cap was not closed", 6+i)
		}
	}
	bind := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	for i, c := range open {
		if err := c.write(bind); err != nil {
			t.Fatal(err)
		}
		if _, err := c.read(); err != nil {
			t.Fatalf("connection %d within the cap not served: %v", i+1, err)
		}
	}
	other, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, net.TCPAddrFromAddrPort(addrPortOf(mustTCPAddr(t, ts.tcp))))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	oc := &streamClient{t: t, conn: other, br: newReader(other)}
	if err := oc.write(bind); err != nil {
		t.Fatal(err)
	}
	if _, err := oc.read(); err != nil {
		t.Fatalf("another address not served while the first is at its cap: %v", err)
	}
	if v := metrictest.Value(t, reg, "icehub_turn_conns_refused_total", nil); v != 3 {
		t.Fatalf("conns_refused_total = %v, want 3", v)
	}
	// Closing one frees a place, once the server has seen the close: a new connection is
	// served (until then it is closed at once, over the cap).
	_ = open[0].conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		again := dialStream(t, ts.tcp, auth.Credentials{})
		err := again.write(bind)
		if err == nil {
			_, err = again.read()
		}
		_ = again.conn.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a freed place was not given back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// One address at turn.max_allocations_per_ip gets 486, whatever user it presents, while
// another address still allocates; a freed allocation gives its place back.
func TestMaxAllocationsPerIP(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Settings.MaxAllocationsPerIP = 2 })
	alloc := func(local string, user string) (*rawTURN, int) {
		c := newRawTURNFrom(t, local, ts.udp, ts.creds(t, user))
		return c, c.allocate(0)
	}
	first, code := alloc("127.0.0.1:0", "a")
	if code != 0 {
		t.Fatalf("first allocation: %d", code)
	}
	if _, code := alloc("127.0.0.1:0", "b"); code != 0 {
		t.Fatalf("second allocation: %d", code)
	}
	if _, code := alloc("127.0.0.1:0", "c"); code != 486 {
		t.Fatalf("third allocation from one address: %d, want 486", code)
	}
	if _, code := alloc("127.0.0.2:0", "d"); code != 0 {
		t.Fatalf("another address: %d", code)
	}
	if code, _ := first.request(stun.MethodRefresh, rawAttr{stun.AttrLifetime, []byte{0, 0, 0, 0}}); code != 0 {
		t.Fatalf("Refresh 0: %d", code)
	}
	// The address's count drops when the allocation is gone, which may trail the answer.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, code := alloc("127.0.0.1:0", "e")
		if code == 0 {
			break
		}
		if code != 486 || time.Now().After(deadline) {
			t.Fatalf("allocation after one was freed: %d", code)
		}
	}
}

// 20 000 Binding requests with an unknown comprehension-required attribute from one
// address: each still gets its 420 within the address's answer credit, and what the server
// logs stays bounded (pion logged each at WARN).
func TestUnknownAttributeBindingsDoNotFloodTheLog(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, nil, slog.LevelDebug-4, reg)
	conn, err := net.Dial("udp4", ts.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, rawAttr{0x0077, []byte{1, 2, 3, 4}}).Raw
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	m := &stun.Message{Raw: buf[:n]}
	if m.Decode() != nil || codeOf(m) != 420 {
		t.Fatalf("answer %v, want 420", m)
	}
	var ua stun.UnknownAttributes
	if ua.GetFrom(m) != nil || len(ua) != 1 || ua[0] != 0x0077 {
		t.Fatalf("UNKNOWN-ATTRIBUTES %v", ua)
	}
	t.Logf("420 to a %d-byte Binding: %d bytes", len(req), n)
	before := ts.logs.total()
	for range 20000 {
		_, _ = conn.Write(req)
	}
	time.Sleep(300 * time.Millisecond)
	if lines := ts.logs.total() - before; lines > 10 {
		t.Fatalf("%d log lines for 20 000 Bindings from one address", lines)
	}
}

func mustTCPAddr(t *testing.T, s string) *net.TCPAddr {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
