package turnserver

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"icehub/internal/metrictest"
)

// The caps' arithmetic on a clock the test drives: a long run gets the cap plus the
// tolerance, never more; what stays under the cap is never refused; pace asks exactly for
// the wait that keeps a stream within the cap.
func TestRateBucket(t *testing.T) {
	const bps = 400_000 // 50 000 bytes/s
	var b rateBucket
	now := int64(time.Hour)
	passed := 0
	for i := range 10_000 { // 10 s offered at 1 MB/s in 1000-byte datagrams, 1 ms apart
		if b.take(now+int64(i)*int64(time.Millisecond), 1000, bps) {
			passed += 1000
		}
	}
	if max := 10*50_000 + 25_000 + 1000; passed > max || passed < 10*50_000 {
		t.Fatalf("10 s at 1 MB/s under a 400 kbit/s cap passed %d bytes, want 500000..%d", passed, max)
	}
	var under rateBucket
	for i := range 1000 { // 250 kbit/s: 1000 bytes every 32 ms, with 20-datagram bursts
		at := now + int64(i/20)*20*int64(32*time.Millisecond)
		if !under.take(at, 1000, bps) {
			t.Fatalf("datagram %d refused at 62 %% of the cap", i)
		}
	}
	var p rateBucket
	if w := p.pace(now, 25_000, bps); w != 0 {
		t.Fatalf("the first half second's bytes wait %s", w)
	}
	if w := p.pace(now, 50_000, bps); w != time.Second {
		t.Fatalf("one more second's bytes at once wait %s, want 1s", w)
	}
}

// A datagram a cap refuses costs a policy load, a clock reading and a compare-and-swap, and
// allocates nothing.
func BenchmarkCapCheckDrop(b *testing.B) {
	s := &Server{}
	set := defaultSettings
	set.MaxBitrate = 16_000
	s.policy.Store(newPolicy(set, nil))
	rec := &relayRecord{}
	pol := s.policy.Load()
	now := capClock(time.Now())
	b.ReportAllocs()
	for b.Loop() {
		s.checkCaps(pol, rec, toPeer, 1000, now)
	}
}

const (
	capBPS   = 400_000 // the cap under test: 50 000 bytes/s
	dgram    = 1000
	overFor  = 3 * time.Second
	underFor = 2 * time.Second
)

// Every datagram path holds turn.max_bitrate, both ways, on allocations that were made
// before the cap (a reload brought it): 1 MB/s offered each way gets at most 1.25 × 400
// kbit/s through, and traffic at half the cap loses nothing. The paths: pion's client over
// UDP (the loop's ChannelData fast path both ways, or pion's with ICEHUB_PORTABLE_UDP=1),
// over TCP (the portable relay, frames pion writes on the stream), and a client that never
// binds a channel (Send and Data indications through pion).
func TestBitrateCapEveryPath(t *testing.T) {
	for _, tc := range []struct {
		name string
		mk   func(*testing.T, *testServer, *udpSink) (flow, net.Addr)
	}{
		{"udp channels", func(t *testing.T, ts *testServer, s *udpSink) (flow, net.Addr) {
			return pionFlow(t, ts, "udp", false, s)
		}},
		{"tcp client", func(t *testing.T, ts *testServer, s *udpSink) (flow, net.Addr) {
			return pionFlow(t, ts, "tcp", true, s)
		}},
		{"indications", rawFlow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts, reg := capServer(t)
			sink := newUDPSink(t)
			f, relay := tc.mk(t, ts, sink)
			reloadCaps(t, ts, capBPS, 0)

			toPeer, toClient, want, _ := pumpBoth([]flow{f}, sink, []net.Addr{relay}, capBPS/2, underFor)
			if toPeer != want || toClient < want {
				t.Fatalf("at half the cap: %d bytes to the peer, %d to the client; want all %d each way", toPeer, toClient, want)
			}
			if d := droppedPackets(t, reg, "to_peer", "allocation") + droppedPackets(t, reg, "to_client", "allocation"); d != 0 {
				t.Fatalf("%v datagrams dropped under the cap", d)
			}

			toPeer, toClient, _, window := pumpBoth([]flow{f}, sink, []net.Addr{relay}, 8_000_000, overFor)
			capped(t, "client to peer", toPeer, overFor, window)
			capped(t, "peer to client", toClient, overFor, window)
			for _, dir := range []string{"to_peer", "to_client"} {
				if droppedPackets(t, reg, dir, "allocation") == 0 {
					t.Errorf("no drop counted %s", dir)
				}
			}
		})
	}
}

// turn.total_bitrate holds for all allocations together, and a datagram between two
// allocations of this server (own-relay delivery, inside the process) is held by the
// sender's cap and by the receiver's.
func TestBitrateCapTotalAndOwnRelay(t *testing.T) {
	t.Run("total", func(t *testing.T) {
		t.Parallel()
		ts, reg := capServer(t)
		sink := newUDPSink(t)
		f1, r1 := pionFlow(t, ts, "one", false, sink)
		f2, r2 := pionFlow(t, ts, "two", true, sink)
		reloadCaps(t, ts, 0, capBPS)
		toPeer, toClient, _, window := pumpBoth([]flow{f1, f2}, sink, []net.Addr{r1, r2}, 8_000_000, overFor)
		capped(t, "two clients to the peer", toPeer, overFor, window)
		capped(t, "the peer to two clients", toClient, overFor, window)
		if droppedPackets(t, reg, "to_peer", "total") == 0 || droppedPackets(t, reg, "to_peer", "allocation") != 0 {
			t.Error("drops not counted under limit=total")
		}
	})
	t.Run("own relay", func(t *testing.T) {
		t.Parallel()
		ts, _ := startServerReg(t, nil) // no loopback peers: only the own-relay exception
		cr := ts.creds(t, "receiver")
		recv := udpClient(t, ts.udp, cr.Username, cr.Password)
		rrelay, err := recv.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		got := new(atomic.Int64)
		go func() {
			buf := make([]byte, 2048)
			for {
				n, _, err := rrelay.ReadFrom(buf)
				if err != nil {
					return
				}
				got.Add(int64(n))
			}
		}()
		var senders []net.PacketConn
		for i, tcp := range []bool{false, true} {
			cr := ts.creds(t, "sender"+itoa(int64(i)))
			s, err := udpClientFor(t, ts, cr.Username, cr.Password, tcp).Allocate()
			if err != nil {
				t.Fatal(err)
			}
			// The receiver's permission (and channel) for the sender's relay.
			if _, err := rrelay.WriteTo([]byte("hello"), s.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			senders = append(senders, s)
		}
		time.Sleep(300 * time.Millisecond)
		for _, s := range senders {
			before := got.Load()
			deadline := time.Now().Add(testTimeout)
			for got.Load() == before && time.Now().Before(deadline) {
				_, _ = s.WriteTo([]byte("warm up"), rrelay.LocalAddr())
				time.Sleep(20 * time.Millisecond)
			}
		}
		reloadCaps(t, ts, capBPS, 0)
		time.Sleep(capToleranceDur) // the warm-up's share of the buckets is gone
		start, began := got.Load(), time.Now()
		var wg sync.WaitGroup
		for _, s := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pump(overFor, 8_000_000, dgram, func(b []byte) { _, _ = s.WriteTo(b, rrelay.LocalAddr()) })
			}()
		}
		wg.Wait()
		time.Sleep(300 * time.Millisecond)
		// Each sender is held to the cap, so 2 × the cap reaches the receiver's relay; its
		// own cap halves that.
		capped(t, "two own relays to a third", got.Load()-start, overFor, time.Since(began))
	})
}

const capToleranceDur = time.Duration(capTolerance)

// An RFC 6062 TCP relay is paced, both ways: nothing is lost, and no more than the cap
// gets through.
func TestBitrateCapTCPRelay(t *testing.T) {
	ts, _ := capServer(t)
	reloadCaps(t, ts, capBPS, 0)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var atPeer atomic.Int64
	accepted := make(chan time.Time, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		accepted <- time.Now() // the peer's bytes may flow to the client from here
		go pump(overFor+time.Second, 8_000_000, dgram, func(b []byte) { _, _ = c.Write(b) })
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			atPeer.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	cr := ts.creds(t, "tcp-relay")
	alloc, err := tcpClient(t, ts.tcp, cr.Username, cr.Password).AllocateTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = alloc.Close() })
	conn, err := alloc.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	var atClient atomic.Int64
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			atClient.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	start := time.Now()
	pump(overFor, 8_000_000, dgram, func(b []byte) {
		if time.Since(start) < overFor {
			_ = conn.SetWriteDeadline(start.Add(overFor))
			_, _ = conn.Write(b)
		}
	})
	el := time.Since(start)
	capped(t, "client to peer (TCP relay)", atPeer.Load(), el, time.Since(start))
	capped(t, "peer to client (TCP relay)", atClient.Load(), el, time.Since(<-accepted))
}

// With a cap in force no allocation may be relayed past user space.
func TestUnderBitrateCap(t *testing.T) {
	ts, _ := capServer(t)
	rec := &relayRecord{network: "udp", advertised: netip.MustParseAddrPort("127.0.0.1:1")}
	if ts.srv.underBitrateCap(rec) {
		t.Fatal("capped without a cap")
	}
	reloadCaps(t, ts, 0, 1_000_000)
	if !ts.srv.underBitrateCap(rec) {
		t.Fatal("turn.total_bitrate set, yet not capped")
	}
	reloadCaps(t, ts, 0, 0)
	if ts.srv.underBitrateCap(rec) {
		t.Fatal("still capped after the caps were removed")
	}
}

// A stranger who learned the relay address (no permission) cannot spend the client's
// allowance: at 1 MB/s from an address pion refuses, the peer's traffic at half the cap still
// loses nothing, and none of the stranger's datagrams counts as a drop.
//
// "Nothing" is icehub's part: the stranger shares the relay socket's receive buffer, and
// should the server's reader stall (a loaded machine) the kernel drops what finds it full,
// the peer's datagrams with the stranger's. A datagram the client missed must be one the
// kernel dropped on this process's sockets.
func TestBitrateCapStrangerFloodCostsTheClientNothing(t *testing.T) {
	// The peer filter lets the stranger's address through: only the permission stops it.
	ts, reg := startServerReg(t, func(c *Config) {
		c.Settings.AllowPeers = []netip.Prefix{mustPrefix("127.0.0.1/32"), mustPrefix("127.0.0.2/32")}
	})
	sink := newUDPSink(t)
	f, relay := pionFlow(t, ts, "victim", false, sink)
	reloadCaps(t, ts, capBPS, 0)
	stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no 127.0.0.2 to flood from: %v", err)
	}
	defer stranger.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pump(underFor+500*time.Millisecond, 8_000_000, dgram, func(b []byte) { _, _ = stranger.WriteTo(b, relay) })
	}()
	time.Sleep(100 * time.Millisecond)
	before := f.got.Load()
	drops0, dropsKnown := kernelUDPDrops()
	sent := pump(underFor, capBPS/2, dgram, func(b []byte) { _, _ = sink.conn.WriteTo(b, relay) })
	<-done
	time.Sleep(300 * time.Millisecond)
	drops1, _ := kernelUDPDrops()
	if n := metrictest.Value(t, reg, "icehub_turn_relayed_packets_total", map[string]string{"direction": "to_client"}); n < 1000 {
		t.Fatalf("only %v datagrams reached the relay: the stranger's flood did not", n)
	}
	got := f.got.Load() - before
	switch lost, kernel := (sent-got)/dgram, drops1-drops0; {
	case got > sent:
		t.Fatalf("the peer sent %d bytes during the flood, the client got %d: the stranger's reached it", sent, got)
	case got < sent && (!dropsKnown || lost > kernel):
		t.Fatalf("the peer sent %d bytes at half the cap during the flood, the client got %d: %d datagrams lost, %d dropped by the kernel on full receive buffers",
			sent, got, lost, kernel)
	case got < sent:
		t.Logf("the client missed %d of the peer's %d datagrams; the kernel dropped %d on full receive buffers meanwhile (a stalled reader)",
			lost, sent/dgram, kernel)
	}
	if d := droppedPackets(t, reg, "to_client", "allocation"); d != 0 {
		t.Fatalf("%v datagrams counted against the client's cap: the stranger's flood spent its allowance", d)
	}
}

// kernelUDPDrops sums the drops the kernel counts on this process's UDP sockets (the
// sockets among /proc/self/fd, in /proc/self/net/udp and udp6): datagrams that found a full
// receive buffer, above all. known is false where they cannot be read (not Linux).
func kernelUDPDrops() (drops int64, known bool) {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, false
	}
	ours := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(l, "socket:[") {
			ours[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	for _, table := range []string{"/proc/self/net/udp", "/proc/self/net/udp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			return 0, false
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
			f := strings.Fields(line)
			if len(f) < 13 || !ours[f[9]] {
				continue
			}
			n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
			if err != nil {
				return 0, false
			}
			drops += n
		}
	}
	return drops, true
}
