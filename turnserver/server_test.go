package turnserver

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"icehub/auth"
)

func TestUDPRelayRoundTrip(t *testing.T) {
	ts := startServer(t, loopbackAllowed)
	peer := udpEcho(t)
	cr := ts.creds(t, "alice")
	c := udpClient(t, ts.udp, cr.Username, cr.Password)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	defer relay.Close()
	port := relay.LocalAddr().(*net.UDPAddr).Port
	if port < int(ts.cfg.RelayPorts.Min) || port > int(ts.cfg.RelayPorts.Max) {
		t.Fatalf("relay port %d outside relay_ports %v", port, ts.cfg.RelayPorts)
	}
	if err := c.CreatePermission(peer); err != nil {
		t.Fatalf("CreatePermission: %v", err)
	}
	roundTrip(t, relay, peer, "hello over udp")
	if n := ts.srv.AllocationCount(); n != 1 {
		t.Fatalf("AllocationCount = %d, want 1", n)
	}
}

func TestBindingUDPAndTCP(t *testing.T) {
	ts := startServer(t, nil)
	for _, c := range []struct {
		name string
		mk   func() (net.Conn, error)
	}{
		{"udp", func() (net.Conn, error) { return net.Dial("udp4", ts.udp) }},
		{"tcp", func() (net.Conn, error) { return net.DialTimeout("tcp4", ts.tcp, testTimeout) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := c.mk()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(testTimeout))
			req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
			if _, err := conn.Write(req.Raw); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1500)
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			res := &stun.Message{Raw: buf[:n]}
			if err := res.Decode(); err != nil {
				t.Fatal(err)
			}
			var xma stun.XORMappedAddress
			if err := xma.GetFrom(res); err != nil {
				t.Fatalf("no XOR-MAPPED-ADDRESS: %v", err)
			}
			if xma.String() != conn.LocalAddr().String() {
				t.Fatalf("mapped %s, want %s", xma.String(), conn.LocalAddr())
			}
		})
	}
}

func TestSamePortUDPAndTCP(t *testing.T) {
	ts := startServer(t, nil)
	u, _ := netip.ParseAddrPort(ts.udp)
	p, _ := netip.ParseAddrPort(ts.tcp)
	if u.Port() != p.Port() || u.Port() == 0 {
		t.Fatalf("udp %s and tcp %s differ", ts.udp, ts.tcp)
	}
}

func TestTCPClientRelay(t *testing.T) {
	ts := startServer(t, loopbackAllowed)
	peer := udpEcho(t)
	cr := ts.creds(t, "bob")
	c := tcpClient(t, ts.tcp, cr.Username, cr.Password)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate over TCP: %v", err)
	}
	defer relay.Close()
	if err := c.CreatePermission(peer); err != nil {
		t.Fatalf("CreatePermission: %v", err)
	}
	roundTrip(t, relay, peer, "hello from a tcp client")
}

func TestTCPRelayAllocation(t *testing.T) {
	ts := startServer(t, loopbackAllowed)
	peer := tcpEcho(t)
	cr := ts.creds(t, "carol")
	c := tcpClient(t, ts.tcp, cr.Username, cr.Password)
	alloc, err := c.AllocateTCP()
	if err != nil {
		t.Fatalf("AllocateTCP: %v", err)
	}
	defer alloc.Close()
	port := alloc.Addr().(*net.TCPAddr).Port
	if port < int(ts.cfg.RelayPorts.Min) || port > int(ts.cfg.RelayPorts.Max) {
		t.Fatalf("relay port %d outside relay_ports", port)
	}
	conn, err := alloc.Dial("tcp", peer.String())
	if err != nil {
		t.Fatalf("Dial through relay: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	msg := []byte("hello over an RFC 6062 relay")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := ioReadFull(conn, buf); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(buf) != string(msg) {
		t.Fatalf("echo %q, want %q", buf, msg)
	}
}

func TestTCPRelayOff(t *testing.T) {
	ts := startServer(t, func(c *Config) { loopbackAllowed(c); c.Settings.TCPRelay = false })
	cr := ts.creds(t, "dave")
	c := tcpClient(t, ts.tcp, cr.Username, cr.Password)
	_, err := c.AllocateTCP()
	if code := turnCode(err); code != 442 {
		t.Fatalf("AllocateTCP with tcp_relay off: err %v (code %d), want 442", err, code)
	}
}

func TestCredentials(t *testing.T) {
	ts := startServer(t, nil)
	now := time.Now()
	expired := "1000:eve"
	signedBy := func(secret, username string) string { return auth.Password(secret, username) }
	valid := now.Add(time.Hour).Unix()
	user := func(name string) string { return itoa(valid) + ":" + name }
	cases := []struct {
		name, username, password string
		ok                       bool
	}{
		{"first secret", user("u1"), signedBy(testSecret1, user("u1")), true},
		{"rotated second secret", user("u2"), signedBy(testSecret2, user("u2")), true},
		{"unknown secret", user("u3"), signedBy("not-a-configured-secret", user("u3")), false},
		{"wrong signature", user("u4"), signedBy(testSecret1, user("someone-else")), false},
		{"expired", expired, signedBy(testSecret1, expired), false},
		{"malformed", "no-expiry", signedBy(testSecret1, "no-expiry"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := udpClient(t, ts.udp, tc.username, tc.password)
			relay, err := c.Allocate()
			if tc.ok {
				if err != nil {
					t.Fatalf("Allocate: %v", err)
				}
				_ = relay.Close()
				return
			}
			if err == nil {
				_ = relay.Close()
				t.Fatal("Allocate succeeded with bad credentials")
			}
			if code := turnCode(err); code != 401 {
				t.Fatalf("err %v (code %d), want 401", err, code)
			}
		})
	}
}

func TestPeerFilterLive(t *testing.T) {
	ts := startServer(t, nil) // default filter: loopback denied
	a := ts.creds(t, "alice")
	b := ts.creds(t, "bob")
	ca := udpClient(t, ts.udp, a.Username, a.Password)
	cb := udpClient(t, ts.udp, b.Username, b.Password)
	ra, err := ca.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	rb, err := cb.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()

	for _, peer := range []string{"10.0.0.1:9", "169.254.169.254:80", "192.168.1.1:53", "224.0.0.1:9", "100.64.0.1:9"} {
		err := ca.CreatePermission(net.UDPAddrFromAddrPort(netip.MustParseAddrPort(peer)))
		if code := turnCode(err); code != 403 {
			t.Errorf("CreatePermission %s: err %v (code %d), want 403", peer, err, code)
		}
	}
	// 127.0.0.1 carries live relays, so a permission for it is granted (permissions are
	// per IP), but packets reach only the exact relay addresses, not other loopback ports.
	echo := udpEcho(t)
	if err := ca.CreatePermission(echo); err != nil {
		t.Fatalf("CreatePermission to relay IP: %v", err)
	}
	noEcho(t, ra, echo)
	// The other client's relay address is this server's own: allowed both ways.
	if err := ca.CreatePermission(rb.LocalAddr()); err != nil {
		t.Fatalf("permission to own relay %s: %v", rb.LocalAddr(), err)
	}
	if err := cb.CreatePermission(ra.LocalAddr()); err != nil {
		t.Fatalf("permission to own relay %s: %v", ra.LocalAddr(), err)
	}
	if _, err := ra.WriteTo([]byte("ping"), rb.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	_ = rb.SetReadDeadline(time.Now().Add(testTimeout))
	n, from, err := rb.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" || from.String() != ra.LocalAddr().String() {
		t.Fatalf("relay to relay: %q from %v, err %v", buf[:n], from, err)
	}
}

func TestPermissionRefused403(t *testing.T) {
	ts := startServer(t, nil)
	cr := ts.creds(t, "frank")
	c := udpClient(t, ts.udp, cr.Username, cr.Password)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	peer := &net.UDPAddr{IP: net.ParseIP("10.1.2.3"), Port: 9}
	if err := c.CreatePermission(peer); turnCode(err) != 403 {
		t.Fatalf("CreatePermission: %v, want 403", err)
	}
}

func TestQuotas(t *testing.T) {
	t.Run("per user 486", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.Settings.MaxAllocationsPerUser = 2; c.Settings.MaxAllocations = 100 })
		cr := ts.creds(t, "greedy")
		for i := 0; i < 2; i++ {
			r, err := udpClient(t, ts.udp, cr.Username, cr.Password).Allocate()
			if err != nil {
				t.Fatalf("allocation %d: %v", i+1, err)
			}
			defer r.Close()
		}
		_, err := udpClient(t, ts.udp, cr.Username, cr.Password).Allocate()
		if code := turnCode(err); code != 486 {
			t.Fatalf("third allocation: %v (code %d), want 486", err, code)
		}
		other := ts.creds(t, "modest")
		r, err := udpClient(t, ts.udp, other.Username, other.Password).Allocate()
		if err != nil {
			t.Fatalf("another user: %v", err)
		}
		_ = r.Close()
	})
	t.Run("total 508", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.Settings.MaxAllocationsPerUser = 0; c.Settings.MaxAllocations = 2 })
		for i := 0; i < 2; i++ {
			cr := ts.creds(t, "user"+itoa(int64(i)))
			r, err := udpClient(t, ts.udp, cr.Username, cr.Password).Allocate()
			if err != nil {
				t.Fatalf("allocation %d: %v", i+1, err)
			}
			defer r.Close()
		}
		cr := ts.creds(t, "late")
		_, err := udpClient(t, ts.udp, cr.Username, cr.Password).Allocate()
		if code := turnCode(err); code != 508 {
			t.Fatalf("third allocation: %v (code %d), want 508", err, code)
		}
	})
}

func TestPublicIPAdvertised(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.PublicIP = netip.MustParseAddr("203.0.113.7") })
	cr := ts.creds(t, "pub")
	relay, err := udpClient(t, ts.udp, cr.Username, cr.Password).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	if ip := relay.LocalAddr().(*net.UDPAddr).IP.String(); ip != "203.0.113.7" {
		t.Fatalf("XOR-RELAYED-ADDRESS IP %s, want public_ip 203.0.113.7", ip)
	}
}

func TestReload(t *testing.T) {
	ts := startServer(t, nil)
	cr := ts.creds(t, "reload")
	c := udpClient(t, ts.udp, cr.Username, cr.Password)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	echo := udpEcho(t)
	if err := c.CreatePermission(echo); err != nil { // granted: 127.0.0.1 is the relay's IP
		t.Fatal(err)
	}
	noEcho(t, relay, echo)
	nt := ts.cfg
	loopbackAllowed(&nt)
	reload := func(s Settings) {
		t.Helper()
		commit, err := ts.srv.PrepareReload(s)
		if err != nil {
			t.Fatalf("PrepareReload: %v", err)
		}
		commit()
	}
	reload(nt.Settings)
	roundTrip(t, relay, echo, "still alive after reload")
	// A peer the client permitted reaches it...
	sender, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	inbound := func() bool {
		if _, err := sender.WriteTo([]byte("unasked"), relay.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		_ = relay.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		defer relay.SetReadDeadline(time.Time{})
		n, _, err := relay.ReadFrom(buf)
		return err == nil && string(buf[:n]) == "unasked"
	}
	if !inbound() {
		t.Fatal("a permitted, allowed peer does not reach the client")
	}
	nt.Settings.DenyPeers = []netip.Prefix{mustPrefix("127.0.0.0/8")}
	nt.Settings.AllowPeers = nil
	// A refused reload changes nothing: the peer stays reachable.
	bad := nt.Settings
	bad.MaxAllocations = -1
	if _, err := ts.srv.PrepareReload(bad); !errors.Is(err, ErrConfig) {
		t.Fatalf("PrepareReload of bad settings: %v, want ErrConfig", err)
	}
	roundTrip(t, relay, echo, "unchanged after a refused reload")
	// Prepared but not committed changes nothing either.
	if _, err := ts.srv.PrepareReload(nt.Settings); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, relay, echo, "unchanged before commit")
	reload(nt.Settings)
	noEcho(t, relay, echo)
	// ...and, once the filter refuses it, not even with the client's permission.
	if inbound() {
		t.Fatal("a peer denied by a reload still reaches the client")
	}
	if code := turnCode(c.CreatePermission(echo)); code != 403 {
		t.Fatalf("after deny_peers reload: code %d, want 403", code)
	}
}

func TestIPv6Relay(t *testing.T) {
	ts := startServer(t, nil)
	cr := ts.creds(t, "six")
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := startClient(t, conn, ts.udp, cr.Username, cr.Password, turn.RequestedAddressFamilyIPv6)
	relay, err := c.Allocate()
	probe, perr := net.ListenPacket("udp6", "[::1]:0")
	if perr != nil {
		// This host really has no IPv6 loopback: the server must say so with 440.
		if code := turnCode(err); code != 440 {
			t.Fatalf("no IPv6 on host (%v): Allocate err %v (code %d), want 440", perr, err, code)
		}
		return
	}
	_ = probe.Close()
	if err != nil {
		t.Fatalf("IPv6 Allocate: %v", err)
	}
	defer relay.Close()
	ip := relay.LocalAddr().(*net.UDPAddr).IP
	if ip.To4() != nil || !ip.IsLoopback() {
		t.Fatalf("relay %s, want an IPv6 loopback relay", relay.LocalAddr())
	}
}
