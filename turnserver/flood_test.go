package turnserver

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"icehub/auth"
	"icehub/internal/metrictest"
	"icehub/internal/testenv"
)

// rttSamples measures n sequential relay round trips (client → relay → echo peer → relay →
// client), one every gap, and returns them sorted. Lost or late echoes count as 1 s.
func rttSamples(t *testing.T, relay net.PacketConn, peer net.Addr, n int, gap time.Duration) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	buf := make([]byte, 256)
	for i := range n {
		msg := fmt.Appendf(nil, "rtt-%d", i)
		start := time.Now()
		if _, err := relay.WriteTo(msg, peer); err != nil {
			t.Fatal(err)
		}
		_ = relay.SetReadDeadline(start.Add(time.Second))
		d := time.Second
		for {
			k, _, err := relay.ReadFrom(buf)
			if err != nil {
				break
			}
			if string(buf[:k]) == string(msg) {
				d = time.Since(start)
				break
			}
		}
		out = append(out, d)
		time.Sleep(gap)
	}
	slices.Sort(out)
	return out
}

// The flood generator, the legitimate client and the server share the test's CPUs (two in
// CI); on loopback idle RTTs are tens of microseconds, so "within 2×" gets an absolute
// allowance for scheduling noise. A starved relay (losses count as 1 s) still fails.
const (
	rttSlack50 = 250 * time.Microsecond
	rttSlack99 = 5 * time.Millisecond
)

func pct(s []time.Duration, q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }

// floodStats is what a flood sent and what came back to its sockets.
type floodStats struct {
	sent, answered    atomic.Int64
	bytesIn, bytesOut atomic.Int64 // bytes the server received from the flood / sent back
}

// floodKind is what a blind flood sends.
type floodKind struct {
	name string
	// request builds the k-th request; nonce is one the attacker fetched for its own
	// address, which it cannot use for its victim's.
	request func(k int, nonce string) []byte
}

var floodKinds = []floodKind{
	{"bare Allocate", func(int, string) []byte {
		return stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP()).Raw
	}},
	{"wrong credentials", func(k int, nonce string) []byte {
		user := fmt.Sprintf("%d:intruder%d", time.Now().Add(time.Hour).Unix(), k%64)
		return stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP(),
			stun.NewUsername(user), stun.NewRealm("icehub"), stun.NewNonce(nonce),
			stun.NewLongTermIntegrity(user, "icehub", "wrong-password"), stun.Fingerprint).Raw
	}},
}

// blindFlood sends kind's requests from socks sockets on 127.0.0.1 — the legitimate
// clients' address — at pps per socket for dur, as a spoofer would: it never uses what comes
// back, which it could not see. What comes back is counted (the victim would receive it).
func blindFlood(t *testing.T, server string, kind floodKind, nonce string, socks, pps int, dur time.Duration, st *floodStats) {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UDPConn, socks)
	var readers sync.WaitGroup
	for i := range conns {
		conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, ra)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadBuffer(4 << 20)
		conns[i] = conn
		_ = conn.SetReadDeadline(time.Now().Add(dur + 3*time.Second))
		readers.Add(1)
		go func() {
			defer readers.Done()
			buf := make([]byte, 2048)
			for {
				n, err := conn.Read(buf)
				if err != nil {
					return
				}
				st.answered.Add(1)
				st.bytesOut.Add(int64(n))
			}
		}()
	}
	const tick = 5 * time.Millisecond
	perTick := socks * pps * int(tick) / int(time.Second)
	start := time.Now()
	next := start
	for k := 0; time.Since(start) < dur && k < socks*pps*int(dur/time.Second+1); {
		for range perTick {
			b := kind.request(k, nonce)
			if _, err := conns[k%socks].Write(b); err == nil {
				st.sent.Add(1)
				st.bytesIn.Add(int64(len(b)))
			}
			k++
		}
		next = next.Add(tick)
		time.Sleep(time.Until(next))
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond)) // the last answers
	}
	readers.Wait()
	for _, c := range conns {
		_ = c.Close()
	}
}

// foreignNonce is a nonce the server minted for 127.0.0.2: what an attacker gets by asking
// from its own address before spoofing another.
func foreignNonce(t *testing.T, ts *testServer) string {
	t.Helper()
	c := newRawTURNFrom(t, "127.0.0.2:0", ts.udp, auth.Credentials{})
	res, err := c.roundTrip(c.build(stun.MethodAllocate, stun.ClassRequest, requestedUDP()))
	if err != nil {
		t.Fatal(err)
	}
	var n stun.Nonce
	if codeOf(res) != 401 || n.GetFrom(res) != nil {
		t.Fatalf("no 401 with a nonce: %v", res)
	}
	return n.String()
}

// TestSpoofedFloodsDoNotLockOutClients floods the server from the legitimate clients' own
// address (8 sockets × 1 500 requests/s of bare Allocates, then of wrong-credential
// Allocates carrying a nonce minted for another address), as a spoofer could, with the
// default answer credit and integrity rate. Asserted, for each flood:
//   - five new clients from that address set up an allocation each, and relay;
//   - fewer bytes are answered toward the address than the flood sent (no amplification
//     toward a spoofed victim);
//   - the wrong-credential flood costs no HMAC work: its nonces are refused before any
//     MESSAGE-INTEGRITY check.
//
// Relay loss and RTT under these floods are measured side by side with idle in bench
// (`go run ./bench flood`).
func TestSpoofedFloodsDoNotLockOutClients(t *testing.T) {
	testenv.Long(t)
	ts, reg := startServerReg(t, func(c *Config) {
		loopbackAllowed(c)
		s := &c.Settings
		s.AnswerAllowance, s.AnswerRefill = defaultSettings.AnswerAllowance, defaultSettings.AnswerRefill
		s.IntegrityRate, s.IntegrityBurst = defaultSettings.IntegrityRate, defaultSettings.IntegrityBurst
	})
	peer := udpEcho(t)
	nonce := foreignNonce(t, ts)
	const socks, pps, clients = 8, 1500, 5
	dur := 2500 * time.Millisecond
	for _, kind := range floodKinds {
		t.Run(kind.name, func(t *testing.T) {
			checks0 := metrictest.Value(t, reg, "icehub_turn_integrity_checks_total", nil)
			st := &floodStats{}
			done := make(chan struct{})
			go func() { defer close(done); blindFlood(t, ts.udp, kind, nonce, socks, pps, dur, st) }()
			time.Sleep(200 * time.Millisecond)

			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cr := ts.creds(t, fmt.Sprintf("victim%d", i))
					relay, err := udpClient(t, ts.udp, cr.Username, cr.Password).Allocate()
					if err != nil {
						errs <- fmt.Errorf("client %d: allocate under the flood: %w", i, err)
						return
					}
					defer relay.Close()
					lost := 0
					buf := make([]byte, 64)
					for k := range 50 {
						msg := fmt.Appendf(nil, "c%d-%d", i, k)
						_, _ = relay.WriteTo(msg, peer)
						// An echo that comes after its second is lost for this count;
						// it is read and dropped here, not taken for the next one's.
						_ = relay.SetReadDeadline(time.Now().Add(time.Second))
						for {
							n, _, err := relay.ReadFrom(buf)
							if err != nil {
								lost++
								break
							}
							if string(buf[:n]) == string(msg) {
								break
							}
						}
					}
					if lost > 5 {
						errs <- fmt.Errorf("client %d lost %d of 50 echoes", i, lost)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			<-done
			checks := metrictest.Value(t, reg, "icehub_turn_integrity_checks_total", nil) - checks0
			t.Logf("%s: flood sent %d requests (%d bytes), %d answered (%d bytes); %v integrity checks",
				kind.name, st.sent.Load(), st.bytesIn.Load(), st.answered.Load(), st.bytesOut.Load(), checks)
			// The generator shares the CPUs (and is slow under -race): a third of the
			// target rate still floods the server far past its answer credit.
			if st.sent.Load() < int64(socks*pps)*int64(dur/time.Second)/3 {
				t.Fatalf("only %d flood requests sent: no flood to speak of", st.sent.Load())
			}
			// Fewer bytes back than the flood sent: a byte buys 0.95 bytes of answer, and the
			// allowance is small next to a flood this size.
			if st.bytesOut.Load() >= st.bytesIn.Load() {
				t.Fatalf("amplification: %d bytes answered toward the address for %d received",
					st.bytesOut.Load(), st.bytesIn.Load())
			}
			// The clients' own requests need a few checks each; the flood none.
			if checks > 20*clients {
				t.Fatalf("%v MESSAGE-INTEGRITY checks during the flood: the flood's nonces were checked", checks)
			}
		})
	}
}

// TestMalformedInputLive throws truncated, oversized and garbage STUN and ChannelData at the
// UDP port and garbage streams at the TCP port while a legitimate client relays: it keeps
// relaying during and after, the server closes garbage TCP streams, and stays up.
func TestMalformedInputLive(t *testing.T) {
	ts, _ := startServerReg(t, loopbackAllowed)
	cr, relay, peer := legitRelay(t, ts, "before")

	alloc := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP(),
		stun.NewUsername(cr.Username), stun.NewRealm("icehub"), stun.NewNonce("n"),
		stun.NewLongTermIntegrity(cr.Username, "icehub", cr.Password), stun.Fingerprint).Raw
	random := func(n int) []byte { b := make([]byte, n); _, _ = rand.Read(b); return b }
	withLen := func(b []byte, l uint16) []byte {
		b = append([]byte(nil), b...)
		b[2], b[3] = byte(l>>8), byte(l)
		return b
	}
	datagrams := [][]byte{
		{}, {0}, {0, 1}, alloc[:19], alloc[:20], alloc[:len(alloc)-1], alloc[:len(alloc)-9],
		withLen(alloc, 0xFFFC), withLen(alloc, 4), withLen(alloc, 3),
		append(append([]byte(nil), alloc...), random(1000)...),
		append(append([]byte(nil), alloc[:20]...), random(9000)...), // oversized body, bogus attributes
		{0x40, 0x01, 0xFF, 0xFF, 1, 2, 3},                           // ChannelData claiming 64 KiB
		{0x40, 0x01, 0x00, 0x10},                                    // ChannelData, header only
		append([]byte{0x7F, 0xFF, 0x00, 0x04}, random(4)...),        // unbound channel
		random(20), random(548), random(1500), random(65000),
	}
	ra, _ := net.ResolveUDPAddr("udp4", ts.udp)
	attacker, err := net.DialUDP("udp4", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for round := 0; round < 200; round++ {
			select {
			case <-stop:
				return
			default:
			}
			for _, d := range datagrams {
				_, _ = attacker.Write(d)
			}
			for range 20 {
				_, _ = attacker.Write(random(1 + round%200))
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	// Garbage TCP streams: random bytes, a STUN header promising a huge body then silence
	// (closed by the client), an endless stream of ChannelData with bogus channels.
	streams := [][]byte{
		append([]byte{0x80}, random(4096)...), // first byte neither STUN (00) nor ChannelData (01)
		append([]byte{0x00, 0x03, 0xFF, 0xFC, 0x21, 0x12, 0xA4, 0x42}, random(12)...),
		withLen(alloc, 0x1000),
		{0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0},
	}
	closedByServer := 0
	for _, s := range streams {
		conn, err := net.DialTimeout("tcp", ts.tcp, testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write(s)
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := bufio.NewReader(conn).ReadByte(); err != nil {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				closedByServer++
			}
		}
		conn.Close()
	}
	for i := range 5 {
		roundTrip(t, relay, peer, fmt.Sprintf("during %d", i))
	}
	close(stop)
	wg.Wait()
	if closedByServer < 2 {
		t.Errorf("the server closed only %d of the 2 unframeable garbage streams", closedByServer)
	}
	roundTrip(t, relay, peer, "after")
	// New clients are served too, over UDP and TCP.
	other := ts.creds(t, "other")
	r2, err := tcpClient(t, ts.tcp, other.Username, other.Password).Allocate()
	if err != nil {
		t.Fatalf("TCP client after the garbage: %v", err)
	}
	r2.Close()
}

// legitRelay gives user "legit" an allocation with a permission to a fresh echo peer, checked
// by one round trip: the client whose service the abuse tests watch.
func legitRelay(t *testing.T, ts *testServer, warm string) (auth.Credentials, net.PacketConn, *net.UDPAddr) {
	t.Helper()
	peer := udpEcho(t)
	cr := ts.creds(t, "legit")
	c := udpClient(t, ts.udp, cr.Username, cr.Password)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	if err := c.CreatePermission(peer); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, relay, peer, warm)
	return cr, relay, peer
}
