//go:build linux

package udploop

import (
	"bytes"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// echoHandler answers each listener datagram with its reverse (from a reply buffer) and
// forwards each datagram of an added socket to client, with a 4-byte header put in front
// in place.
type echoHandler struct {
	client netip.AddrPort
	rounds atomic.Int64
}

func (h *echoHandler) Listener(pkt []byte, src netip.AddrPort, out *Out) {
	r := out.ReplyBuf()
	for i := len(pkt) - 1; i >= 0; i-- {
		r = append(r, pkt[i])
	}
	out.Send(r, src)
	out.Send(pkt, src) // a second send for one datagram is refused
}

func (h *echoHandler) Socket(_ *Socket, buf []byte, n int, _ netip.AddrPort, out *Out) {
	copy(buf, "HDR:")
	out.Send(buf[:Headroom+n], h.client)
}

func (h *echoHandler) RoundDone() { h.rounds.Add(1) }

func TestLoopAnswersAndForwards(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	lst, err := Listen("udp4", netip.AddrPortFrom(lo, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer lst.Close()
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	h := &echoHandler{client: client.LocalAddr().(*net.UDPAddr).AddrPort()}
	l, err := New(lst, h)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	extra, err := Listen("udp4", netip.AddrPortFrom(lo, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Add(extra); err != nil {
		t.Fatal(err)
	}
	lstAddr := localAddr(t, lst)
	extraAddr := localAddr(t, extra)

	// Bursts of datagrams: more than one round's slots each, so flushes happen mid-round,
	// but small enough for the sockets' default buffers.
	const bursts, perBurst = 3, 100
	buf := make([]byte, 2048)
	for b := range bursts {
		for i := range perBurst {
			if _, err := client.WriteToUDPAddrPort([]byte{byte(b*perBurst + i), 'a', 'b'}, lstAddr); err != nil {
				t.Fatal(err)
			}
		}
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		for got := 0; got < perBurst; got++ {
			k, _, err := client.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("burst %d: after %d answers: %v", b, got, err)
			}
			if k != 3 || buf[0] != 'b' || buf[1] != 'a' {
				t.Fatalf("answer %q", buf[:k])
			}
		}
	}
	// Exactly one answer each: the second Send per datagram was refused.
	_ = client.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if k, _, err := client.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("extra datagram %q", buf[:k])
	}

	if _, err := client.WriteToUDPAddrPort([]byte("payload"), extraAddr); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	k, from, err := client.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:k], []byte("HDR:payload")) || from != lstAddr {
		t.Fatalf("forwarded %q from %v: %v", buf[:k], from, err)
	}

	l.Remove(extra)
	if err := extra.Send([]byte("x"), h.client); err == nil {
		t.Fatal("send on a removed socket succeeded")
	}
	if h.rounds.Load() == 0 {
		t.Fatal("RoundDone never called")
	}
}

func localAddr(t *testing.T, s *Socket) netip.AddrPort {
	t.Helper()
	sa, err := getsockname(s)
	if err != nil {
		t.Fatal(err)
	}
	return sa
}
