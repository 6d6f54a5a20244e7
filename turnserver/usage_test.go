package turnserver

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"icehub/internal/echopeer"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

// endedRecords starts a server (loopback peers allowed) whose ended allocations arrive on
// the returned channel.
func endedRecords(t *testing.T) (*testServer, chan AllocationRecord) {
	t.Helper()
	ch := make(chan AllocationRecord, 16)
	ts := startServer(t, func(c *Config) {
		loopbackAllowed(c)
		c.OnAllocationEnded = func(r AllocationRecord) { ch <- r }
	})
	return ts, ch
}

func nextRecord(t *testing.T, ch chan AllocationRecord, within time.Duration) AllocationRecord {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("no allocation record within %s", within)
	}
	return AllocationRecord{}
}

func TestUsageRecordRefresh0(t *testing.T) {
	ts, ended := endedRecords(t)
	peer := echopeer.Start(t)
	cr := ts.creds(t, "alice")
	c := udpClient(t, ts.udp, cr.Username, cr.Password)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, relay, peer.Addr, "hello")
	for i := range 20 { // then a known amount each way
		roundTrip(t, relay, peer.Addr, string(make([]byte, 100+i)))
	}
	live := ts.srv.Allocations()
	if len(live) != 1 || live[0].User != "alice" || live[0].Relay.String() != relay.LocalAddr().String() ||
		live[0].BytesToPeer == 0 || live[0].Reason != "" {
		t.Fatalf("Allocations() = %+v", live)
	}
	if err := relay.Close(); err != nil { // pion's client sends Refresh with LIFETIME 0
		t.Fatal(err)
	}
	r := nextRecord(t, ended, 5*time.Second)
	if r.Reason != EndRefresh0 {
		t.Fatalf("reason %q, want %q", r.Reason, EndRefresh0)
	}
	if r.User != "alice" || r.ClientTransport != "udp" || r.RelayTransport != "udp" ||
		r.Client.Addr() != netip.MustParseAddr("127.0.0.1") || r.Relay.String() != relay.LocalAddr().String() {
		t.Fatalf("record %+v", r)
	}
	if r.BytesToPeer != peer.RxBytes.Load() || r.PacketsToPeer != peer.RxPackets.Load() || r.BytesToClient != peer.TxBytes.Load() {
		t.Fatalf("record counts %d/%d bytes, %d pkts to peer; peer saw %d bytes, %d pkts, sent %d",
			r.BytesToPeer, r.BytesToClient, r.PacketsToPeer, peer.RxBytes.Load(), peer.RxPackets.Load(), peer.TxBytes.Load())
	}
	if r.Duration <= 0 || r.Start.IsZero() || time.Since(r.Start) < r.Duration {
		t.Fatalf("start %v duration %v", r.Start, r.Duration)
	}
}

func TestUsageRecordClientGone(t *testing.T) {
	ts, ended := endedRecords(t)
	cr := ts.creds(t, "bob")
	conn, err := net.DialTimeout("tcp", ts.tcp, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c := startClient(t, turn.NewSTUNConn(conn), ts.tcp, cr.Username, cr.Password, 0)
	if _, err := c.Allocate(); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close() // the TCP client goes away without deallocating
	r := nextRecord(t, ended, 5*time.Second)
	if r.Reason != EndClientGone || r.ClientTransport != "tcp" || r.User != "bob" {
		t.Fatalf("record %+v, want reason %q over tcp", r, EndClientGone)
	}
}

// A Refresh with LIFETIME 0 that pion refuses (443: wrong address family) must not label the
// allocation's later expiry as a deallocation.
func TestUsageRecordExpiredAfterRefusedRefresh0(t *testing.T) {
	ts, ended := endedRecords(t)
	c := newRawTURN(t, ts.udp, ts.creds(t, "carol"))
	lifetime := refresh0Window + time.Second
	code, _ := c.request(stun.MethodAllocate, requestedUDP(), rawAttr{stun.AttrLifetime, u32(uint32(lifetime / time.Second))})
	if code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	if code, _ := c.request(stun.MethodRefresh, rawAttr{stun.AttrLifetime, u32(0)}, requestedFamily(2)); code != 443 {
		t.Fatalf("refresh 0 with the wrong family: %d, want 443", code)
	}
	r := nextRecord(t, ended, lifetime+5*time.Second)
	if r.Reason != EndExpired || r.User != "carol" {
		t.Fatalf("record %+v, want reason %q", r, EndExpired)
	}
	if r.Duration < lifetime-100*time.Millisecond {
		t.Fatalf("ended after %s, before its lifetime %s", r.Duration, lifetime)
	}
}

func TestUsageRecordShutdown(t *testing.T) {
	ts, ended := endedRecords(t)
	cr := ts.creds(t, "dave")
	for range 2 {
		c := udpClient(t, ts.udp, cr.Username, cr.Password)
		if _, err := c.Allocate(); err != nil {
			t.Fatal(err)
		}
	}
	tc := tcpClient(t, ts.tcp, cr.Username, cr.Password)
	if _, err := tc.Allocate(); err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.Close(); err != nil {
		t.Fatal(err)
	}
	// Close returns after the records of the allocations it ended were handed over.
	for i := range 3 {
		select {
		case r := <-ended:
			if r.Reason != EndShutdown || r.User != "dave" {
				t.Fatalf("record %d: %+v, want reason %q", i, r, EndShutdown)
			}
		default:
			t.Fatalf("only %d of 3 records when Close returned", i)
		}
	}
}

func u32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }
