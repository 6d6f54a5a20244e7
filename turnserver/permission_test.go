package turnserver

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// The own-relay exception and per-packet refusals of the peer filter.

// TestOwnRelayExceptionIsPerTransport: the own-relay exception ("a peer that is one of this
// server's relay addresses is always allowed") must hold per transport. A UDP relay on port
// P must not let a TCP Connect reach whatever TCP service listens on 127.0.0.1:P, and a TCP
// relay on port P must not let UDP datagrams reach a UDP service on 127.0.0.1:P.
func TestOwnRelayExceptionIsPerTransport(t *testing.T) {
	t.Run("udp relay opens tcp", func(t *testing.T) {
		const lo, hi = 62400, 62403
		victim := lo + 2
		ln, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(victim)) // a local TCP service
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan string, 4)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- c.RemoteAddr().String()
				c.Close()
			}
		}()
		ts, _ := startServerReg(t, func(c *Config) { c.RelayPorts = PortRange{Min: lo, Max: hi} })
		cr := ts.creds(t, "mallory")
		got := false
		for range 4 { // fill the UDP range: one of them is the victim's port number
			c := newRawTURN(t, ts.udp, cr)
			if code := c.allocate(0); code != 0 {
				t.Fatalf("udp allocate: %d", code)
			}
			got = got || int(c.relay.Port()) == victim
		}
		if !got {
			t.Fatalf("no UDP relay on port %d", victim)
		}
		a, err := tcpClient(t, ts.tcp, cr.Username, cr.Password).AllocateTCP()
		if err != nil {
			t.Fatalf("AllocateTCP: %v", err)
		}
		defer a.Close()
		_, err = a.Connect(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: victim})
		select {
		case from := <-accepted:
			t.Fatalf("TCP Connect reached the local service on 127.0.0.1:%d (from %s) because a UDP relay has that port; Connect err %v", victim, from, err)
		case <-time.After(200 * time.Millisecond):
		}
		if err == nil {
			t.Fatalf("Connect to 127.0.0.1:%d succeeded", victim)
		}
	})
	t.Run("tcp relay opens udp", func(t *testing.T) {
		const lo, hi = 62410, 62413
		victim := lo + 1
		pc, err := net.ListenPacket("udp4", "127.0.0.1:"+strconv.Itoa(victim)) // a local UDP service
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		ts, _ := startServerReg(t, func(c *Config) { c.RelayPorts = PortRange{Min: lo, Max: hi} })
		cr := ts.creds(t, "mallory")
		got := false
		for range 4 {
			a, err := tcpClient(t, ts.tcp, cr.Username, cr.Password).AllocateTCP()
			if err != nil {
				t.Fatalf("AllocateTCP: %v", err)
			}
			defer a.Close()
			got = got || a.Addr().(*net.TCPAddr).Port == victim
		}
		if !got {
			t.Fatalf("no TCP relay on port %d", victim)
		}
		// The victim holds UDP port `victim`, so a UDP relay gets another port of the range.
		c := newRawTURN(t, ts.udp, ts.creds(t, "mallory2"))
		if code := c.allocate(0); code != 0 {
			t.Fatalf("udp allocate: %d", code)
		}
		peer := xorPeer{ap: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(victim))}
		if code, _ := c.request(stun.MethodCreatePermission, peer); code != 0 && code != 403 {
			t.Fatalf("CreatePermission: %d", code)
		}
		for range 3 {
			c.sendIndication(peer, []byte("to the local udp service"))
		}
		_ = pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 100)
		if n, from, err := pc.ReadFrom(buf); err == nil {
			t.Fatalf("UDP reached the local service on 127.0.0.1:%d from %s (%q) because a TCP relay has that port", victim, from, buf[:n])
		}
	})
}

// TestPerPacketRefusalsCounted: on loopback the relay's own IP is granted at the permission
// level (so clients of one server reach each other) and packets to its other ports are
// dropped one by one. Those drops, and a Connect refused for the same reason (447), are
// refusals like any other and must be counted in icehub_turn_peer_refused_total.
func TestPerPacketRefusalsCounted(t *testing.T) {
	ts, reg := startServerReg(t, nil)
	sk := newSinks(t, "127.0.0.1")
	cr := ts.creds(t, "mallory")
	c := newRawTURN(t, ts.udp, cr)
	if code := c.allocate(0); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	peer := xorPeer{ap: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sk.port))}
	if code, _ := c.request(stun.MethodCreatePermission, peer); code != 0 {
		t.Fatalf("CreatePermission to the relay's own IP: %d", code)
	}
	if code, _ := c.request(stun.MethodChannelBind, channelNumber(0x4001), peer); code != 0 {
		t.Fatalf("ChannelBind to the relay's own IP: %d", code)
	}
	before := refusedIn(t, reg, "loopback")
	c.sendIndication(peer, []byte("x"))
	c.channelData(0x4001, []byte("y"))
	a, err := tcpClient(t, ts.tcp, cr.Username, cr.Password).AllocateTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Connect(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sk.port}); turnCode(err) != 447 {
		t.Fatalf("Connect: %v, want 447", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for refusedIn(t, reg, "loopback")-before < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := refusedIn(t, reg, "loopback") - before; got < 3 {
		t.Fatalf("peer_refused_total{range=loopback} rose by %v for a dropped Send, a dropped ChannelData and a refused Connect; want 3", got)
	}
	if g := sk.got(); len(g) > 0 {
		t.Fatalf("reached the sink: %v", g)
	}
}
