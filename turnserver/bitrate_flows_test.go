package turnserver

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"

	"icehub/internal/metrictest"
)

// The bitrate tests' traffic: a counting UDP peer, pumps at a fixed rate each way, and
// flows through pion's client (UDP or TCP) or raw ChannelData, on a server with caps.

// udpSink is a UDP peer that counts what reaches it and can send to a relay.
type udpSink struct {
	conn *net.UDPConn
	got  atomic.Int64
	from atomic.Pointer[net.UDPAddr] // the last source: the relay address
}

func newUDPSink(t *testing.T) *udpSink {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	s := &udpSink{conn: c}
	t.Cleanup(func() { _ = c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			s.got.Add(int64(n))
			s.from.Store(from)
		}
	}()
	return s
}

func (s *udpSink) addr() *net.UDPAddr { return s.conn.LocalAddr().(*net.UDPAddr) }

// pump sends size-byte datagrams with send at bps bits per second for d and returns the
// bytes it sent.
func pump(d time.Duration, bps, size int, send func([]byte)) int64 {
	b := make([]byte, size)
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var sent int
	for {
		el := time.Since(start)
		if el >= d {
			return int64(sent)
		}
		for due := int(el.Seconds() * float64(bps) / 8); sent+size <= due; sent += size {
			send(b)
		}
		<-tick.C
	}
}

// flow is one allocation's two directions in a cap test: send pushes one datagram to the
// peer, got counts what the client received from it; bound, for a client that binds a
// channel, tells whether it has (it has sent ChannelData).
type flow struct {
	send  func([]byte)
	got   *atomic.Int64
	bound func() bool
}

// pumpBoth pushes bps each way through every flow at once for d, peer to client from the
// sink to relays, and returns the bytes delivered to the peer and to the clients, how many
// each flow offered each way, and the window over which deliveries were counted (d, the
// pumps' lateness, and the wait for what was still in flight).
func pumpBoth(flows []flow, sink *udpSink, relays []net.Addr, bps int, d time.Duration) (toPeer, toClient, offered int64, window time.Duration) {
	start := time.Now()
	peer0, client0 := sink.got.Load(), int64(0)
	for _, f := range flows {
		client0 += f.got.Load()
	}
	var wg sync.WaitGroup
	for i, f := range flows {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if n := pump(d, bps, dgram, f.send); i == 0 {
				offered = n
			}
		}()
		go func() {
			defer wg.Done()
			pump(d, bps, dgram, func(b []byte) { _, _ = sink.conn.WriteTo(b, relays[i]) })
		}()
	}
	wg.Wait()
	time.Sleep(300 * time.Millisecond) // what is still in flight
	toPeer = sink.got.Load() - peer0
	for _, f := range flows {
		toClient += f.got.Load()
	}
	return toPeer, toClient - client0, offered, time.Since(start)
}

// capped asserts that got bytes, offered far over the cap for d and counted over window
// (d and more), are within 1.25 × the cap over the window and at least 0.8 × the cap over d
// (it does let through what the cap allows). The cap lets through its rate over the time it
// relays plus a burst of capTolerance: 1.17 × over 3 s. A server that lags behind the
// offered traffic relays on after d, with the bucket refilling meanwhile, which a bound
// over d alone would take for excess.
func capped(t *testing.T, what string, got int64, d, window time.Duration) {
	t.Helper()
	perSec := float64(capBPS) / 8
	hi, lo := float64(got)/(perSec*window.Seconds()), float64(got)/(perSec*d.Seconds())
	t.Logf("%s: %d bytes at 1 MB/s offered for %s, counted over %s: %.2f × the cap over the window, %.2f × over %s",
		what, got, d.Round(time.Millisecond), window.Round(time.Millisecond), hi, lo, d.Round(time.Millisecond))
	if hi > 1.25 || lo < 0.8 {
		t.Errorf("%s: delivered %.2f × the %d bit/s cap over %s (want at most 1.25), %.2f × over %s (want at least 0.8)",
			what, hi, capBPS, window.Round(time.Millisecond), lo, d.Round(time.Millisecond))
	}
}

// pionFlow allocates with a pion client (UDP or TCP), warms the path up to sink (permission,
// channel) and returns the flow and its relay address.
func pionFlow(t *testing.T, ts *testServer, user string, tcp bool, sink *udpSink) (flow, net.Addr) {
	t.Helper()
	cr := ts.creds(t, user)
	server := ts.udp
	var conn net.PacketConn
	if tcp {
		server = ts.tcp
		sc, err := net.DialTimeout("tcp", server, testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(sc)
	} else {
		uc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = uc
	}
	// pion's client sends ChannelData once the server has answered its ChannelBind, by
	// which time the server relays the channel.
	var bound atomic.Bool
	c := startClient(t, notingConn{conn, func(b []byte) {
		if len(b) > 0 && b[0]&0xC0 == 0x40 {
			bound.Store(true)
		}
	}}, server, cr.Username, cr.Password, 0)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	got := new(atomic.Int64)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := relay.ReadFrom(buf)
			if err != nil {
				return
			}
			got.Add(int64(n))
		}
	}()
	f := flow{send: func(b []byte) { _, _ = relay.WriteTo(b, sink.addr()) }, got: got, bound: bound.Load}
	warmUp(t, f, sink)
	return f, relay.LocalAddr()
}

func udpClientFor(t *testing.T, ts *testServer, user, pass string, tcp bool) interface {
	Allocate() (net.PacketConn, error)
} {
	if tcp {
		return tcpClient(t, ts.tcp, user, pass)
	}
	return udpClient(t, ts.udp, user, pass)
}

// warmUp sends until the sink hears the flow (the permission exists) and, for a client
// that binds channels, until its channel is bound: until then the peer's datagrams reach
// it through pion, as Data indications, behind whatever else pion has to read.
func warmUp(t *testing.T, f flow, sink *udpSink) {
	t.Helper()
	before := sink.got.Load()
	deadline := time.Now().Add(testTimeout)
	for sink.got.Load() == before || f.bound != nil && !f.bound() {
		if time.Now().After(deadline) {
			t.Fatalf("the peer never heard the client (%d bytes), or its channel was never bound", sink.got.Load()-before)
		}
		f.send([]byte("warm up"))
		time.Sleep(20 * time.Millisecond)
	}
}

// rawFlow is a hand-built UDP client that never binds a channel: client to peer in Send
// indications, peer to client in Data indications, both through pion.
func rawFlow(t *testing.T, ts *testServer, sink *udpSink) (flow, net.Addr) {
	t.Helper()
	c := newRawTURN(t, ts.udp, ts.creds(t, "raw"))
	if code := c.allocate(0); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	peer := xorPeer{ap: sink.addr().AddrPort()}
	if code, _ := c.request(stun.MethodCreatePermission, peer); code != 0 {
		t.Fatalf("CreatePermission: %d", code)
	}
	_ = c.conn.SetReadDeadline(time.Time{})
	got := new(atomic.Int64)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := c.conn.Read(buf)
			if err != nil {
				return
			}
			m := &stun.Message{Raw: buf[:n]}
			var data stun.RawAttribute
			if m.Decode() == nil && m.Type == stun.NewType(stun.MethodData, stun.ClassIndication) {
				if a, ok := m.Attributes.Get(stun.AttrData); ok {
					data = a
					got.Add(int64(len(data.Value)))
				}
			}
		}
	}()
	var mu sync.Mutex // the raw client's messages are built one at a time
	f := flow{send: func(b []byte) { mu.Lock(); c.sendIndication(peer, b); mu.Unlock() }, got: got}
	warmUp(t, f, sink)
	return f, net.UDPAddrFromAddrPort(c.relay)
}

// capServer starts a server with loopback peers allowed and no cap (the caps come by
// reload, onto live allocations), exporting metrics to the returned registry.
func capServer(t *testing.T) (*testServer, *prometheus.Registry) {
	return startServerReg(t, loopbackAllowed)
}

func reloadCaps(t *testing.T, ts *testServer, perAlloc, total uint64) {
	t.Helper()
	set := ts.cfg.Settings
	set.MaxBitrate, set.TotalBitrate = perAlloc, total
	commit, err := ts.srv.PrepareReload(set)
	if err != nil {
		t.Fatal(err)
	}
	commit()
}

func droppedPackets(t *testing.T, reg *prometheus.Registry, dir, limit string) float64 {
	return metrictest.Value(t, reg, "icehub_turn_bitrate_dropped_packets_total", map[string]string{"direction": dir, "limit": limit})
}
