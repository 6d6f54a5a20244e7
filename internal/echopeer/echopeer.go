// Package echopeer is a UDP peer for tests that echoes every datagram back to its sender and
// counts what it received and sent, so a test can hold a server's usage figures against what
// the peer itself saw.
package echopeer

import (
	"net"
	"sync/atomic"
	"testing"
)

// Peer is a running echo peer on a loopback port.
type Peer struct {
	Addr *net.UDPAddr

	RxBytes, RxPackets, TxBytes atomic.Uint64
}

// Start listens on 127.0.0.1 and echoes until the test ends.
func Start(t testing.TB) *Peer {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return Serve(t, pc)
}

// Serve echoes on pc, a UDP socket the test opened (in a network namespace, say), until the
// test ends, and closes it then.
func Serve(t testing.TB, pc net.PacketConn) *Peer {
	t.Cleanup(func() { _ = pc.Close() })
	p := &Peer{Addr: pc.LocalAddr().(*net.UDPAddr)}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			p.RxBytes.Add(uint64(n))
			p.RxPackets.Add(1)
			// Counted before it is sent: the client may get the echo, and the test read
			// the counters, before WriteTo returns here.
			p.TxBytes.Add(uint64(n))
			if _, err := pc.WriteTo(buf[:n], from); err != nil {
				p.TxBytes.Add(^uint64(n - 1)) // not sent after all
			}
		}
	}()
	return p
}
