//go:build linux

package e2e

import (
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"icehub/auth"
)

// TestNATPublicIP shows what turn.public_ip is for. icehub runs on a private address behind a
// 1:1 NAT, once with public_ip set and once without. A client behind a cone NAT allocates and
// an echo peer on the Internet answers it either way (it replies to where packets came from,
// which the NAT rewrote). But a peer that sends first to the relayed address it was told — as
// a remote browser does with a relay candidate — reaches the client only when public_ip is
// set: unset, the relayed address is the server's private one, which the Internet cannot reach.
func TestNATPublicIP(t *testing.T) {
	coturnTools(t)
	w := newWorld(t)
	startPeer(t, w)
	srv, cl := w.servers["nat"], w.clients["cone"]
	for _, set := range []bool{true, false} {
		name := map[bool]string{true: "public_ip set", false: "public_ip unset"}[set]
		t.Run(name, func(t *testing.T) {
			startHub(t, srv, hubOpts{noPublicIP: !set})
			want := map[bool]string{true: srv.public, false: srv.private}[set]

			r := uclient(t, cl.host, 20, "-e", peerIP, "-r", strconv.Itoa(peerPort), "-p", "3478", srv.public)
			if !r.noLoss() || len(r.relays) == 0 {
				t.Fatalf("echo through the relay: sent %d, received %d, relays %v:\n%s", r.sent, r.recv, r.relays, r.out)
			}
			for _, a := range r.relays {
				if hostOf(a) != want {
					t.Fatalf("relayed address %s, want %s", a, want)
				}
			}

			relayed, seenFrom, err := peerSendsFirst(t, w, cl, srv)
			switch {
			case set && err != nil:
				t.Fatalf("a peer sending to the relayed address %s: %v", relayed, err)
			case !set && err == nil:
				t.Fatalf("a peer reached the private relayed address %s from the Internet", relayed)
			}
			outcome := "reaches the client"
			if err != nil {
				outcome = "fails: " + err.Error()
			}
			t.Logf("public_ip | %-15s | uclient echo lost %s | relayed %s, seen by the peer as %s | a peer sending to it first %s", name, r.lost, relayed, seenFrom, outcome)
		})
	}
}

// peerSendsFirst allocates with pion's client from cl, has it open a permission toward a
// peer socket on the Internet, then has the peer send to the relayed address the server
// advertised. It returns that address, the address the peer saw the relay's packets come
// from, and nil when the peer's datagram arrived through the relay.
func peerSendsFirst(t *testing.T, w *world, cl, srv *site) (relayed, seenFrom net.Addr, err error) {
	t.Helper()
	ring, err := auth.NewRing(auth.Config{Secrets: []string{labSecret}})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := ring.Mint("natlab-pion", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sock, err := cl.host.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	server := net.JoinHostPort(srv.public, "3478")
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: sock,
		Username: cred.Username, Password: cred.Password, RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relay.Close()
	peer, err := w.inet.ListenPacket("udp4", net.JoinHostPort(peerIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()

	// The client's first send installs the permission for the peer's address.
	buf := make([]byte, 1500)
	for range 10 {
		if _, err := relay.WriteTo([]byte("from the client"), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, from, err := peer.ReadFrom(buf); err == nil {
			seenFrom = from
			break
		}
	}
	if seenFrom == nil {
		t.Fatal("the peer never heard from the client through the relay")
	}

	got := make(chan error, 1)
	go func() {
		_ = relay.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := relay.ReadFrom(buf)
		if err == nil && string(buf[:n]) != "from the peer" {
			err = errors.New("unexpected payload " + strconv.Quote(string(buf[:n])))
		}
		got <- err
	}()
	var sendErr error
	for range 5 {
		if _, err := peer.WriteTo([]byte("from the peer"), relay.LocalAddr()); err != nil {
			sendErr = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := <-got; err != nil {
		if sendErr != nil {
			return relay.LocalAddr(), seenFrom, sendErr
		}
		return relay.LocalAddr(), seenFrom, err
	}
	return relay.LocalAddr(), seenFrom, nil
}
