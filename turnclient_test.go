// TURN clients (pion's and coturn's tools), echo peers and certificates for the process-level
// tests.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"icehub/auth"
	"icehub/internal/echopeer"
	"icehub/internal/testenv"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

const hardSecret = "hardening-secret-0123"

func hardCreds(t *testing.T, user string) auth.Credentials {
	t.Helper()
	ring, err := auth.NewRing(auth.Config{Secrets: []string{hardSecret}})
	if err != nil {
		t.Fatal(err)
	}
	cr, err := ring.Mint(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cr
}

// clientToClient allocates two relays for user and checks they reach each other: the
// default filter's own-relay exception, so it needs no allow_peers.
func clientToClient(t *testing.T, p *proc, user string) {
	t.Helper()
	cr := hardCreds(t, user)
	a, err := allocate(t, p.turn, cr.Username, cr.Password)
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	b, err := allocate(t, p.turn, cr.Username, cr.Password)
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	if err := a.client.CreatePermission(b.conn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := b.client.CreatePermission(a.conn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	for try := 0; ; try++ {
		if _, err := a.conn.WriteTo([]byte("c2c"), b.conn.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		b.conn.SetReadDeadline(time.Now().Add(time.Second))
		if n, _, err := b.conn.ReadFrom(buf); err == nil && string(buf[:n]) == "c2c" {
			break
		}
		if try == 4 {
			t.Fatal("relay to relay: nothing arrived")
		}
	}
	a.conn.Close()
	b.conn.Close()
	a.client.Close()
	b.client.Close()
}

func stunCode(err error) int {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	var tv stun.TurnError
	if errors.As(err, &tv) {
		return int(tv.ErrorCodeAttr.Code)
	}
	return 0
}

func mint(t *testing.T, secret, user string, ttl time.Duration) auth.Credentials {
	t.Helper()
	r, err := auth.NewRing(auth.Config{Secrets: []string{secret}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.Mint(user, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// echoPeer is a UDP echo server on loopback, the "peer" a relay sends to.
func echoPeer(t *testing.T) *net.UDPAddr {
	t.Helper()
	return echopeer.Start(t).Addr
}

// relay is one pion client with a UDP allocation on an icehub.
type relay struct {
	client *turn.Client
	conn   net.PacketConn
}

// allocate logs in with username/password and allocates; the error is the server's refusal.
func allocate(t *testing.T, turnPort int, username, password string) (*relay, error) {
	t.Helper()
	sock, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := fmt.Sprintf("127.0.0.1:%d", turnPort)
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: sock,
		Username: username, Password: password, RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); sock.Close() })
	conn, err := c.Allocate()
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	return &relay{client: c, conn: conn}, nil
}

// echo sends payload to peer through the relay and waits for it to come back.
func (r *relay) echo(peer net.Addr, payload []byte) error {
	buf := make([]byte, 2048)
	var lastErr error
	for range 5 { // the first send also creates the permission; UDP may drop one
		if _, err := r.conn.WriteTo(payload, peer); err != nil {
			return err
		}
		r.conn.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := r.conn.ReadFrom(buf)
		if err == nil && bytes.Equal(buf[:n], payload) {
			return nil
		}
		lastErr = err
	}
	return fmt.Errorf("no echo: %v", lastErr)
}

// tcpTURNClient is a pion client talking to icehub over TCP, listening; the caller closes
// both (pion's Close leaves the connection open).
func tcpTURNClient(t *testing.T, turnPort int, cr auth.Credentials) (*turn.Client, net.Conn) {
	t.Helper()
	server := fmt.Sprintf("127.0.0.1:%d", turnPort)
	conn, err := net.DialTimeout("tcp", server, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server,
		Conn: turn.NewSTUNConn(conn), Username: cr.Username, Password: cr.Password, RTO: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	return c, conn
}

// startUDPEchoTool runs coturn's turnutils_peer as the echo peer and returns its port.
func startUDPEchoTool(t *testing.T) int {
	t.Helper()
	path := testenv.Tool(t, "turnutils_peer", "coturn")
	port := freePort(t)
	cmd := exec.Command(path, "-p", strconv.Itoa(port), "-L", "127.0.0.1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer c.Close()
	buf := make([]byte, 16)
	for range 100 {
		c.WriteTo([]byte("ping"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := c.ReadFrom(buf); err == nil {
			return port
		}
	}
	t.Fatal("turnutils_peer does not echo")
	return 0
}

func runUclient(t *testing.T, args ...string) (string, error) {
	t.Helper()
	path := testenv.Tool(t, "turnutils_uclient", "coturn")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	return string(out), err
}

var uclientTotals = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)

// uclientNoLoss reports whether uclient's last summary shows everything sent came back.
func uclientNoLoss(out string) bool {
	all := uclientTotals.FindAllStringSubmatch(out, -1)
	if len(all) == 0 {
		return false
	}
	last := all[len(all)-1]
	return last[1] != "0" && last[1] == last[2] && strings.Contains(out, "Total lost packets 0 (0.000000%)")
}
