package turnserver

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"icehub/internal/metrictest"
)

// attackTarget is one address an open-relay scanner tries, and the range the default
// filter must count its refusal under.
type attackTarget struct {
	ip   string
	rng  string
	port uint16 // 0: the sinks' port
}

// openRelayTargets are the addresses public TURN-abuse tools try: loopback, the unspecified
// addresses (which the kernel delivers locally), RFC 1918, CGNAT, cloud metadata,
// multicast, broadcast, IPv6 loopback/link-local/ULA, IPv4-mapped and NAT64 forms.
var openRelayTargets = []attackTarget{
	{ip: "127.0.0.1", rng: "loopback"},
	{ip: "127.1.2.3", rng: "loopback"},
	{ip: "0.0.0.0", rng: "this-network"},
	{ip: "10.0.0.1", rng: "private"},
	{ip: "172.16.0.1", rng: "private"},
	{ip: "192.168.1.1", rng: "private"},
	{ip: "100.64.0.1", rng: "cgnat"},
	{ip: "169.254.169.254", rng: "link-local"},
	{ip: "224.0.0.1", rng: "multicast"},
	{ip: "255.255.255.255", rng: "broadcast"},
	{ip: "::1", rng: "loopback"},
	{ip: "::", rng: "unspecified"},
	{ip: "fe80::1", rng: "link-local"},
	{ip: "fc00::1", rng: "unique-local"},
	{ip: "::ffff:127.0.0.1", rng: "loopback"},
	{ip: "::ffff:169.254.169.254", rng: "link-local"},
	{ip: "64:ff9b::7f00:1", rng: "nat64-loopback"},
}

// pureV6 reports whether ip needs an IPv6 allocation (IPv4-mapped addresses do not).
func pureV6(ip netip.Addr) bool { return ip.Is6() && !ip.Is4In6() }

// TestOpenRelayAttackSuite plays an open-relay scanner with valid credentials against the
// default configuration: CreatePermission, ChannelBind, Send indications and ChannelData
// over UDP, and RFC 6062 Connect over TCP, to every special-purpose target and to the
// server's own TURN port. Each must be refused (403, or for the relay's own IP, which the
// design allows at the permission level, dropped per packet), refusals are counted in
// icehub_turn_peer_refused_total{range}, and nothing reaches the listening sinks at
// 127.0.0.1, 127.1.2.3 and [::1] on the targeted port — nor the TURN port itself, which
// would answer the Binding request used as payload.
func TestOpenRelayAttackSuite(t *testing.T) {
	ts, reg := startServerReg(t, nil) // default peer filter and quotas
	v6 := hasIPv6Loopback()
	sinkIPs := []string{"127.0.0.1", "127.1.2.3"}
	if v6 {
		sinkIPs = append(sinkIPs, "::1")
	}
	sk := newSinks(t, sinkIPs...)
	turnPort := netip.MustParseAddrPort(ts.udp).Port()
	targets := append([]attackTarget{}, openRelayTargets...)
	targets = append(targets, attackTarget{ip: "127.0.0.1", rng: "loopback", port: turnPort})
	cr := ts.creds(t, "mallory")

	c4 := newRawTURN(t, ts.udp, cr)
	if code := c4.allocate(1); code != 0 {
		t.Fatalf("IPv4 allocate: %d", code)
	}
	var c6 *rawTURN
	if v6 {
		c6 = newRawTURN(t, ts.udp, cr)
		if code := c6.allocate(2); code != 0 {
			t.Fatalf("IPv6 allocate: %d", code)
		}
	}
	// If the relay ever forwarded this to a STUN server (its own TURN port), the answer
	// would come back to us as a Data indication or ChannelData: counted as leaked.
	probe := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw

	t.Run("udp", func(t *testing.T) {
		ch := uint16(0x4000)
		bound := map[netip.AddrPort]uint16{} // pion keys channels by the unmapped peer
		for _, tg := range targets {
			ip := netip.MustParseAddr(tg.ip)
			port := tg.port
			if port == 0 {
				port = uint16(sk.port)
			}
			peer := xorPeer{ap: netip.AddrPortFrom(ip, port)}
			c, famMismatchOK := c4, false
			if pureV6(ip) {
				if c6 != nil {
					c = c6
				} else {
					famMismatchOK = true // no IPv6 here: pion answers 443 before the filter runs
				}
			}
			before := refusedIn(t, reg, tg.rng)
			code, _ := c.request(stun.MethodCreatePermission, peer)
			granted := code == 0
			switch {
			case granted && ip.Unmap() != c.relay.Addr():
				t.Errorf("CreatePermission %s granted, and it is not the relay's own IP %s", peer.ap, c.relay.Addr())
			case !granted && code != 403 && !(famMismatchOK && code == 443):
				t.Errorf("CreatePermission %s: code %d, want 403", peer.ap, code)
			}
			num, ok := bound[netip.AddrPortFrom(ip.Unmap(), port)]
			if !ok {
				ch++
				num = ch
			}
			chCode, _ := c.request(stun.MethodChannelBind, channelNumber(num), peer)
			if chCode == 0 {
				bound[netip.AddrPortFrom(ip.Unmap(), port)] = num
			}
			if granted != (chCode == 0) || (!granted && chCode != 403) {
				t.Errorf("ChannelBind %s: code %d after CreatePermission %d; want the same verdict (403 when refused)", peer.ap, chCode, code)
			}
			for range 3 {
				c.sendIndication(peer, probe)
				if chCode == 0 {
					c.channelData(num, probe)
				}
			}
			if !granted {
				want := 2.0 // the permission and the channel
				if code != 403 {
					want = 1
				}
				if got := refusedIn(t, reg, tg.rng) - before; got < want {
					t.Errorf("%s: peer_refused_total{range=%q} rose by %v, want >= %v", peer.ap, tg.rng, got, want)
				}
			}
			t.Logf("%-28s permission %3d  channel %3d  refused{%s} +%v", peer.ap, code, chCode, tg.rng, refusedIn(t, reg, tg.rng)-before)
		}
		for _, c := range []*rawTURN{c4, c6} {
			if c == nil {
				continue
			}
			c.drain(300 * time.Millisecond)
			if n := c.leaked.Load(); n > 0 {
				t.Errorf("client with relay %s received %d datagrams from peers", c.relay, n)
			}
		}
	})

	t.Run("tcp-connect", func(t *testing.T) {
		tc := tcpClient(t, ts.tcp, cr.Username, cr.Password)
		a4, err := tc.AllocateTCP()
		if err != nil {
			t.Fatalf("AllocateTCP: %v", err)
		}
		defer a4.Close()
		connect := func(tg attackTarget, port uint16) {
			ip := netip.MustParseAddr(tg.ip)
			if pureV6(ip) {
				return // covered by the IPv6 allocation below
			}
			before := refusedIn(t, reg, tg.rng)
			_, err := a4.Connect(&net.TCPAddr{IP: ip.AsSlice(), Port: int(port)})
			code := turnCode(err)
			if err == nil || (code != 403 && code != 447) {
				t.Errorf("Connect %s:%d: err %v (code %d), want 403 or 447", ip, port, err, code)
			}
			if code == 403 && refusedIn(t, reg, tg.rng)-before < 1 {
				t.Errorf("Connect %s:%d refused but not counted under %q", ip, port, tg.rng)
			}
			t.Logf("Connect %-24s code %d", net.JoinHostPort(ip.String(), strconv.Itoa(int(port))), code)
		}
		for _, tg := range targets {
			port := tg.port
			if port == 0 {
				port = uint16(sk.port)
			}
			connect(tg, port)
		}
		if !v6 {
			return
		}
		conn, err := net.DialTimeout("tcp", ts.tcp, testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		tc6 := startClient(t, turn.NewSTUNConn(conn), ts.tcp, cr.Username, cr.Password, turn.RequestedAddressFamilyIPv6)
		al6, err := tc6.AllocateTCP()
		if err != nil {
			t.Fatalf("IPv6 AllocateTCP: %v", err)
		}
		defer al6.Close()
		for _, tg := range targets {
			ip := netip.MustParseAddr(tg.ip)
			if !pureV6(ip) {
				continue
			}
			before := refusedIn(t, reg, tg.rng)
			_, err := al6.Connect(&net.TCPAddr{IP: ip.AsSlice(), Port: sk.port})
			code := turnCode(err)
			if err == nil || (code != 403 && code != 447) {
				t.Errorf("Connect [%s]:%d: err %v (code %d), want 403 or 447", ip, sk.port, err, code)
			}
			if code == 403 && refusedIn(t, reg, tg.rng)-before < 1 {
				t.Errorf("Connect [%s] refused but not counted under %q", ip, tg.rng)
			}
			t.Logf("Connect [%s]:%d code %d", ip, sk.port, code)
		}
	})

	time.Sleep(200 * time.Millisecond) // let any stray datagram land
	if got := sk.got(); len(got) > 0 {
		t.Fatalf("the relay reached a local listener:\n%v", got)
	}
}

// TestRelayPortsStayInRange makes many UDP and TCP allocations from several users and checks
// that every XOR-RELAYED-ADDRESS port lies in relay_ports and none is handed out twice; once
// the range is full the next Allocate gets 508.
func TestRelayPortsStayInRange(t *testing.T) {
	const lo, hi = 62200, 62239 // above Linux's ephemeral range, so nobody else holds them
	ts, _ := startServerReg(t, func(c *Config) { c.RelayPorts = PortRange{Min: lo, Max: hi} })
	seen := map[int]bool{}
	check := func(kind string, port int) {
		t.Helper()
		if port < lo || port > hi {
			t.Fatalf("%s relay port %d outside relay_ports %d-%d", kind, port, lo, hi)
		}
	}
	n := hi - lo + 1
	for i := range n {
		cr := ts.creds(t, "spread"+strconv.Itoa(i/10)) // 10 per user: the default quota
		c := newRawTURN(t, ts.udp, cr)
		if code := c.allocate(0); code != 0 {
			t.Fatalf("allocation %d of %d: code %d", i+1, n, code)
		}
		p := int(c.relay.Port())
		check("udp", p)
		if seen[p] {
			t.Fatalf("udp relay port %d handed out twice", p)
		}
		seen[p] = true
	}
	late := newRawTURN(t, ts.udp, ts.creds(t, "late"))
	if code := late.allocate(0); code != 508 {
		t.Fatalf("allocate with all %d relay ports taken: code %d, want 508", n, code)
	}
	// TCP relays use the same range on TCP.
	for i := range 12 {
		cr := ts.creds(t, "tcp"+strconv.Itoa(i/10))
		a, err := tcpClient(t, ts.tcp, cr.Username, cr.Password).AllocateTCP()
		if err != nil {
			t.Fatalf("AllocateTCP %d: %v", i+1, err)
		}
		check("tcp", a.Addr().(*net.TCPAddr).Port)
		defer a.Close()
	}
}

// TestRelayPortRangeExhaustedRecovers fills a 5-port relay range: the 6th Allocate gets a
// clear 508, and as soon as one allocation is freed the next one succeeds on the freed port.
func TestRelayPortRangeExhaustedRecovers(t *testing.T) {
	const lo, hi = 62300, 62304
	ts, _ := startServerReg(t, func(c *Config) { c.RelayPorts = PortRange{Min: lo, Max: hi} })
	cr := ts.creds(t, "filler")
	var held []*rawTURN
	for i := range 5 {
		c := newRawTURN(t, ts.udp, cr)
		if code := c.allocate(0); code != 0 {
			t.Fatalf("allocation %d: code %d", i+1, code)
		}
		held = append(held, c)
	}
	other := ts.creds(t, "unlucky")
	for range 3 { // stays refused, fast, and the same way
		start := time.Now()
		if code := newRawTURN(t, ts.udp, other).allocate(0); code != 508 {
			t.Fatalf("allocate on a full range: code %d, want 508", code)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("508 took %v", d)
		}
	}
	freed := held[2].relay.Port()
	if code, _ := held[2].request(stun.MethodRefresh, rawAttr{stun.AttrLifetime, []byte{0, 0, 0, 0}}); code != 0 {
		t.Fatalf("deallocate: code %d", code)
	}
	var c *rawTURN
	deadline := time.Now().Add(5 * time.Second)
	for {
		c = newRawTURN(t, ts.udp, other)
		code := c.allocate(0)
		if code == 0 {
			break
		}
		if code != 508 || time.Now().After(deadline) {
			t.Fatalf("allocate after freeing a port: code %d", code)
		}
		time.Sleep(50 * time.Millisecond) // pion closes the relay socket asynchronously
	}
	if c.relay.Port() != freed {
		t.Fatalf("new relay on port %d, want the freed %d", c.relay.Port(), freed)
	}
}

// TestQuotaAbuseIsolated lets one user open allocations past max_allocations_per_user (the
// default, 10) over UDP and TCP: every extra one is refused with 486 and counted, while
// another user allocates and relays client to client undisturbed.
func TestQuotaAbuseIsolated(t *testing.T) {
	ts, reg := startServerReg(t, nil) // baseTURN keeps the default quotas
	max := ts.cfg.Settings.MaxAllocationsPerUser
	if max != 10 {
		t.Fatalf("default max_allocations_per_user is %d; this test assumes 10", max)
	}
	greedy := ts.creds(t, "greedy")
	for i := range max {
		if code := newRawTURN(t, ts.udp, greedy).allocate(0); code != 0 {
			t.Fatalf("allocation %d: code %d", i+1, code)
		}
	}
	before := metrictest.Value(t, reg, "icehub_turn_quota_refused_total", map[string]string{"kind": "user"})
	sent := &requestTally{}
	for i := range 5 {
		c := newRawTURN(t, ts.udp, greedy)
		c.sent = sent
		if code := c.allocate(0); code != 486 {
			t.Fatalf("allocation %d past the quota: code %d, want 486", max+i+1, code)
		}
	}
	conn, err := net.DialTimeout("tcp", ts.tcp, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	tc := startClient(t, notingConn{turn.NewSTUNConn(conn), sent.note}, ts.tcp, greedy.Username, greedy.Password, 0)
	if _, err := tc.Allocate(); turnCode(err) != 486 {
		t.Fatalf("allocation past the quota over TCP: %v, want 486", err)
	}
	// Six refused Allocate transactions. The server counts each request it refuses, and a
	// client retransmits one whose answer is slow to come (a loaded machine): the count is
	// at least one per transaction, at most one per request written.
	txs, writes := sent.counts()
	if txs != 6 {
		t.Fatalf("the clients made %d authenticated Allocate transactions, want the 6 refused", txs)
	}
	if got := metrictest.Value(t, reg, "icehub_turn_quota_refused_total", map[string]string{"kind": "user"}) - before; got < 6 || got > float64(writes) {
		t.Fatalf("quota_refused_total{kind=user} rose by %v, want 6 (up to %d with the clients' retransmissions)", got, writes)
	}
	// Someone else: two allocations that relay to each other under the default filter.
	honest := ts.creds(t, "honest")
	ca := udpClient(t, ts.udp, honest.Username, honest.Password)
	cb := udpClient(t, ts.udp, honest.Username, honest.Password)
	ra, err := ca.Allocate()
	if err != nil {
		t.Fatalf("honest user: %v", err)
	}
	defer ra.Close()
	rb, err := cb.Allocate()
	if err != nil {
		t.Fatalf("honest user: %v", err)
	}
	defer rb.Close()
	if err := ca.CreatePermission(rb.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := cb.CreatePermission(ra.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	relayPing(t, ra, rb, "unaffected by the greedy user")
}

// relayPing sends msg from relay a to relay b and waits for it, retrying lost datagrams.
func relayPing(t *testing.T, a, b net.PacketConn, msg string) {
	t.Helper()
	buf := make([]byte, 1500)
	for range 5 {
		if _, err := a.WriteTo([]byte(msg), b.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = b.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := b.ReadFrom(buf)
		if err == nil && string(buf[:n]) == msg {
			_ = b.SetReadDeadline(time.Time{})
			return
		}
	}
	t.Fatalf("%q never went from relay %s to relay %s", msg, a.LocalAddr(), b.LocalAddr())
}
