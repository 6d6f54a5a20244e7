package main

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"icehub/auth"
)

// echoPeer is a UDP echo server on loopback, the "peer" a relay sends to.
func echoPeer(t *testing.T) *net.UDPAddr {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr)
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
