package turnserver

import (
	"crypto/tls"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"icehub/internal/metrictest"
	"icehub/internal/testcert"
	"icehub/internal/testenv"
)

// stunOnly turns turn.stun_only on.
func stunOnly(c *Config) { c.Settings.STUNOnly = true }

func reload(t *testing.T, ts *testServer, mod func(*Settings)) {
	t.Helper()
	set := ts.cfg.Settings
	mod(&set)
	commit, err := ts.srv.PrepareReload(set)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	ts.cfg.Settings = set
}

// STUN only: pion's client and coturn's turnutils_stunclient get their Binding answers;
// Allocate is challenged like any request, and once authenticated refused with 403 "STUN
// only", whatever the transport.
func TestSTUNOnly(t *testing.T) {
	ts, reg := startServerReg(t, stunOnly)
	cr := ts.creds(t, "stun-only")
	for _, tcp := range []bool{false, true} {
		var c *turn.Client
		if tcp {
			c = tcpClient(t, ts.tcp, cr.Username, cr.Password)
		} else {
			c = udpClient(t, ts.udp, cr.Username, cr.Password)
		}
		mapped, err := c.SendBindingRequest()
		if err != nil || !strings.HasPrefix(mapped.String(), "127.0.0.1:") {
			t.Fatalf("tcp=%v: Binding: %v %v", tcp, mapped, err)
		}
		if _, err := c.Allocate(); turnCode(err) != 403 {
			t.Fatalf("tcp=%v: Allocate: %v, want 403", tcp, err)
		}
	}
	raw := newRawTURN(t, ts.udp, cr)
	res, err := raw.roundTrip(raw.build(stun.MethodAllocate, stun.ClassRequest, requestedUDP()))
	if err != nil || codeOf(res) != 401 {
		t.Fatalf("answer to an unauthenticated Allocate: %v %v, want 401", res, err)
	}
	code, res := raw.request(stun.MethodAllocate, requestedUDP())
	var ec stun.ErrorCodeAttribute
	if code != 403 || ec.GetFrom(res) != nil || string(ec.Reason) != stunOnlyReason {
		t.Fatalf("answer to an authenticated Allocate: %v, want 403 %q", res, stunOnlyReason)
	}
	if err := stun.NewLongTermIntegrity(raw.user, raw.realm, raw.pass).Check(res); err != nil {
		t.Fatalf("403 without a valid MESSAGE-INTEGRITY: %v", err)
	}
	if got := metrictest.Value(t, reg, "icehub_turn_stun_only_refused_total", nil); got < 3 {
		t.Fatalf("stun_only refusals counted %v, want 3", got)
	}

	testenv.Tool(t, "turnutils_stunclient", "coturn")
	out, err := runTool(t, testTimeout, "turnutils_stunclient", "-p", strings.TrimPrefix(ts.udp, "127.0.0.1:"), "127.0.0.1")
	if err != nil || !regexp.MustCompile(`reflexive addr: 127\.0\.0\.1:\d+`).MatchString(out) {
		t.Fatalf("turnutils_stunclient: %v\n%s", err, out)
	}
}

// A reload that turns STUN only on leaves live allocations relaying and refuses new ones;
// turning it off again allocates again.
func TestSTUNOnlyReload(t *testing.T) {
	ts := startServer(t, loopbackAllowed)
	peer := udpEcho(t)
	cr := ts.creds(t, "before")
	relay, err := udpClient(t, ts.udp, cr.Username, cr.Password).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	roundTrip(t, relay, peer, "before")
	reload(t, ts, func(s *Settings) { s.STUNOnly = true })
	roundTrip(t, relay, peer, "still relaying")
	if _, err := udpClient(t, ts.udp, cr.Username, cr.Password).Allocate(); turnCode(err) != 403 {
		t.Fatalf("Allocate after the reload: %v, want 403", err)
	}
	reload(t, ts, func(s *Settings) { s.STUNOnly = false })
	if _, err := udpClient(t, ts.udp, cr.Username, cr.Password).Allocate(); err != nil {
		t.Fatalf("Allocate after STUN only was turned off: %v", err)
	}
}

// full is a server of one allocation with alternates.
func full(alts ...string) func(*Config) {
	return func(c *Config) {
		loopbackAllowed(c)
		c.Settings.MaxAllocations = 1
		for _, a := range alts {
			c.Settings.AlternateServers = append(c.Settings.AlternateServers, netip.MustParseAddrPort(a))
		}
	}
}

// alternateOf performs an Allocate with fresh raw credentials and returns the code and the
// ALTERNATE-SERVER, checking the answer's MESSAGE-INTEGRITY with the client's key.
func alternateOf(t *testing.T, ts *testServer, user string) (int, string) {
	t.Helper()
	c := newRawTURN(t, ts.udp, ts.creds(t, user))
	// The first, unauthenticated Allocate is challenged, never redirected.
	res, err := c.roundTrip(c.build(stun.MethodAllocate, stun.ClassRequest, requestedUDP()))
	if err != nil || codeOf(res) != 401 {
		t.Fatalf("unauthenticated Allocate: %v %v, want 401", res, err)
	}
	code, res := c.request(stun.MethodAllocate, requestedUDP())
	if code == 0 {
		return 0, ""
	}
	if err := stun.NewLongTermIntegrity(c.user, c.realm, c.pass).Check(res); err != nil {
		t.Fatalf("answer %d without a valid MESSAGE-INTEGRITY: %v", code, err)
	}
	var alt stun.AlternateServer
	if alt.GetFrom(res) != nil {
		return code, ""
	}
	ip, _ := netip.AddrFromSlice(alt.IP)
	return code, netip.AddrPortFrom(ip.Unmap(), uint16(alt.Port)).String()
}

// With max_allocations reached, an authenticated Allocate gets 300 Try Alternate naming the
// alternates of its family in turn, with MESSAGE-INTEGRITY; a wrong password gets 401 and
// no alternate; a retransmission of the Allocate that filled the server gets its success
// again; pion's client sees 300. Without an alternate of the family, 508.
func TestAlternateServerWhenFull(t *testing.T) {
	ts, reg := startServerReg(t, full("192.0.2.10:3478", "[2001:db8::10]:3478", "192.0.2.11:3478"))
	first := newRawTURN(t, ts.udp, ts.creds(t, "first"))
	alloc := first.build(stun.MethodAllocate, stun.ClassRequest, requestedUDP())
	if res, err := first.roundTrip(alloc); err != nil || codeOf(res) != 401 {
		t.Fatalf("first Allocate: %v %v", res, err)
	}
	var r stun.Realm
	var n stun.Nonce
	res, _ := first.roundTrip(alloc)
	_ = r.GetFrom(res)
	_ = n.GetFrom(res)
	first.realm, first.non = r.String(), n.String()
	alloc = first.build(stun.MethodAllocate, stun.ClassRequest, requestedUDP())
	if res, err := first.roundTrip(alloc); err != nil || codeOf(res) != 0 {
		t.Fatalf("first authenticated Allocate: %v %v", res, err)
	}
	if res, err := first.roundTrip(alloc); err != nil || codeOf(res) != 0 {
		t.Fatalf("retransmitted Allocate of the allocation that filled the server: %v %v, want its success", res, err)
	}

	var seq []string
	for i := range 4 {
		code, alt := alternateOf(t, ts, "next"+itoa(int64(i)))
		if code != 300 {
			t.Fatalf("Allocate on a full server: %d, want 300", code)
		}
		seq = append(seq, alt)
	}
	if want := []string{"192.0.2.10:3478", "192.0.2.11:3478", "192.0.2.10:3478", "192.0.2.11:3478"}; strings.Join(seq, " ") != strings.Join(want, " ") {
		t.Fatalf("alternates %v, want %v (IPv4 ones only, in turn)", seq, want)
	}

	wrong := ts.creds(t, "wrong")
	wrong.Password = "not-the-password"
	c := newRawTURN(t, ts.udp, wrong)
	if code, res := c.request(stun.MethodAllocate, requestedUDP()); code != 401 || res.Contains(stun.AttrAlternateServer) {
		t.Fatalf("a wrong password got %d %v, want 401 without ALTERNATE-SERVER", code, res)
	}

	cr := ts.creds(t, "pion")
	if _, err := udpClient(t, ts.udp, cr.Username, cr.Password).Allocate(); turnCode(err) != 300 {
		t.Fatalf("pion's Allocate on a full server: %v, want 300", err)
	}
	if got := metrictest.Value(t, reg, "icehub_turn_allocate_redirected_total", map[string]string{"reason": "full", "answer": "alternate"}); got != 5 {
		t.Fatalf("redirects counted %v", got)
	}

	v6only, _ := startServerReg(t, full("[2001:db8::10]:3478"))
	_ = newRawTURN(t, v6only.udp, v6only.creds(t, "a")).allocate(0)
	if code, alt := alternateOf(t, v6only, "b"); code != 508 || alt != "" {
		t.Fatalf("IPv4 client, IPv6 alternates only: %d %q, want 508 and none", code, alt)
	}
	none, _ := startServerReg(t, full())
	_ = newRawTURN(t, none.udp, none.creds(t, "a")).allocate(0)
	if code, _ := alternateOf(t, none, "b"); code != 508 {
		t.Fatalf("full, no alternates: %d, want 508", code)
	}
}

// A TLS client is never sent to an alternate: ALTERNATE-SERVER names an address and a port,
// and the alternate's port serves UDP and TCP, not TLS. It gets 508.
func TestAlternateServerNotForTLS(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		full("192.0.2.10:3478")(c)
		c.TLSListen = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}
		c.TLS = testcert.New(t).ServerConfig()
	})
	tlsAddr := ts.srv.Addrs()[2].String()
	_ = newRawTURN(t, ts.udp, ts.creds(t, "filler")).allocate(0)
	conn, err := tls.Dial("tcp", tlsAddr, &tls.Config{InsecureSkipVerify: true}) // a test certificate
	if err != nil {
		t.Fatal(err)
	}
	cr := ts.creds(t, "tls")
	c := startClient(t, turn.NewSTUNConn(conn), tlsAddr, cr.Username, cr.Password, 0)
	if _, err := c.Allocate(); turnCode(err) != 508 {
		t.Fatalf("TLS Allocate on a full server: %v, want 508", err)
	}
	cr2 := ts.creds(t, "tcp")
	if _, err := tcpClient(t, ts.tcp, cr2.Username, cr2.Password).Allocate(); turnCode(err) != 300 {
		t.Fatalf("TCP Allocate on a full server: %v, want 300", err)
	}
}

// Draining: live allocations relay on and refresh, new Allocates get 300 with an alternate
// (508 without one), and the allocation count falls to zero as clients leave.
func TestDrain(t *testing.T) {
	for _, alts := range [][]string{{"192.0.2.20:3478"}, nil} {
		ts := startServer(t, func(c *Config) {
			loopbackAllowed(c)
			for _, a := range alts {
				c.Settings.AlternateServers = append(c.Settings.AlternateServers, netip.MustParseAddrPort(a))
			}
		})
		peer := udpEcho(t)
		cr := ts.creds(t, "live")
		live := udpClient(t, ts.udp, cr.Username, cr.Password)
		relay, err := live.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		tcpLive, err := tcpClient(t, ts.tcp, cr.Username, cr.Password).Allocate()
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, relay, peer, "before")
		ts.srv.Drain()
		roundTrip(t, relay, peer, "while draining")
		roundTrip(t, tcpLive, peer, "while draining, over TCP")
		want, wantAlt := 508, ""
		if alts != nil {
			want, wantAlt = 300, alts[0]
		}
		if code, alt := alternateOf(t, ts, "new"); code != want || alt != wantAlt {
			t.Fatalf("alternates %v: Allocate while draining: %d %q, want %d %q", alts, code, alt, want, wantAlt)
		}
		if n := ts.srv.AllocationCount(); n != 2 {
			t.Fatalf("%d allocations while draining, want the 2 live ones", n)
		}
		_ = relay.Close() // pion's client deallocates (Refresh lifetime 0): an authenticated request, answered
		_ = tcpLive.Close()
		deadline := time.Now().Add(testTimeout)
		for ts.srv.AllocationCount() > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d allocations left after their clients closed them", ts.srv.AllocationCount())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
