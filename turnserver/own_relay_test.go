package turnserver

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/turn/v5"
)

// Two clients of one server relaying to each other through the relay addresses it
// advertises, when those addresses do not reach the relays over the network: public_ip is
// 127.0.0.2, where nothing listens, standing in for a 1:1 NAT without hairpin. The server
// must hand each datagram to the other relay inside the process, over UDP and TCP clients
// (the UDP loop's relays and the portable ones), with and without channels; and a peer
// without a permission still gets nothing, as over the network.
func TestOwnRelayDeliveryWithoutHairpin(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.PublicIP = netip.MustParseAddr("127.0.0.2") })
	clients := map[string]func(string) *turn.Client{
		"udp": func(user string) *turn.Client {
			cr := ts.creds(t, user)
			return udpClient(t, ts.udp, cr.Username, cr.Password)
		},
		"tcp": func(user string) *turn.Client {
			cr := ts.creds(t, user)
			return tcpClient(t, ts.tcp, cr.Username, cr.Password)
		},
	}
	for _, pair := range [][2]string{{"udp", "udp"}, {"udp", "tcp"}, {"tcp", "tcp"}} {
		t.Run(pair[0]+"-"+pair[1], func(t *testing.T) {
			a := clients[pair[0]]("own-a-" + pair[0])
			b := clients[pair[1]]("own-b-" + pair[1])
			ra, err := a.Allocate()
			if err != nil {
				t.Fatal(err)
			}
			defer ra.Close()
			rb, err := b.Allocate()
			if err != nil {
				t.Fatal(err)
			}
			defer rb.Close()
			if ip := ra.LocalAddr().(*net.UDPAddr).IP; !ip.Equal(net.IPv4(127, 0, 0, 2)) {
				t.Fatalf("relay advertised at %v, want public_ip", ra.LocalAddr())
			}
			// Before b permits a, nothing from a arrives (pion drops it at b's allocation).
			if err := a.CreatePermission(rb.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			if _, err := ra.WriteTo([]byte("no permission yet"), rb.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 256)
			_ = rb.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, _, err := rb.ReadFrom(buf); err == nil {
				t.Fatalf("b received %q without a permission for a", buf[:n])
			}
			_ = rb.SetReadDeadline(time.Time{})
			if err := b.CreatePermission(ra.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			// pion's client sends Send indications at first and binds a channel after a
			// few datagrams: both ways, both paths.
			for i := range 20 {
				msg := fmt.Sprintf("a to b %d", i)
				if _, err := ra.WriteTo([]byte(msg), rb.LocalAddr()); err != nil {
					t.Fatal(err)
				}
				_ = rb.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, from, err := rb.ReadFrom(buf)
				if err != nil || string(buf[:n]) != msg {
					t.Fatalf("b got %q from %v, err %v; want %q", buf[:n], from, err, msg)
				}
				if from.String() != ra.LocalAddr().String() {
					t.Fatalf("b got it from %v, want a's advertised relay %v", from, ra.LocalAddr())
				}
				reply := fmt.Sprintf("b to a %d", i)
				if _, err := rb.WriteTo([]byte(reply), from); err != nil {
					t.Fatal(err)
				}
				_ = ra.SetReadDeadline(time.Now().Add(2 * time.Second))
				if n, _, err := ra.ReadFrom(buf); err != nil || string(buf[:n]) != reply {
					t.Fatalf("a got %q, err %v; want %q", buf[:n], err, reply)
				}
			}
		})
	}
}
