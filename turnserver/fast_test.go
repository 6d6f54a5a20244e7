package turnserver

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"golang.org/x/sys/unix"

	"icehub/config"
)

// fastRig is the fast path without pion: a listener socket, one allocation with a relay
// socket and channel 0x4000 bound to a peer socket, and a client socket.
type fastRig struct {
	c      *core
	lst    *gatedPacketConn
	relay  *loopRelay
	a      *fastAlloc
	client *net.UDPConn
	peer   *net.UDPConn
}

func newFastRig(tb testing.TB) *fastRig {
	tb.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = c.Close() })
		return c
	}
	m, err := newMetrics(nil)
	if err != nil {
		tb.Fatal(err)
	}
	c := &core{log: slog.New(slog.DiscardHandler), m: m, relays: newRelaySet(), quotas: newQuotas(), keys: newKeyCache(), now: time.Now}
	t := config.Default().TURN
	t.AllowPeers = []config.Prefix{mustPrefix("127.0.0.1/32")}
	c.settings.Store(newSettings(t, nil))
	r := &fastRig{c: c, client: listen(), peer: listen()}
	_ = r.client.SetReadBuffer(8 << 20)
	r.lst = newGatedPacketConn(listen(), &gate{c: c})
	if r.lst.loop == nil {
		tb.Fatal("no relay loop")
	}
	tb.Cleanup(func() { _ = r.lst.Close() })
	bind := netip.MustParseAddrPort("127.0.0.1:0")
	fd, err := listenLoopRelay("udp4", bind)
	if err != nil {
		tb.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		tb.Fatal(err)
	}
	bind = netip.AddrPortFrom(bind.Addr(), uint16(sa.(*unix.SockaddrInet4).Port))
	rec := &relayRec{network: "udp", adv: bind, bind: bind, user: "u", owner: r.lst}
	if r.relay, err = newLoopRelay(r.lst.loop, fd, bind, rec); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = r.relay.Close() })
	rec.conn = r.relay
	c.relays.add(rec)
	c.fastAllocCreated(r.client.LocalAddr(), rec)
	r.a = r.relay.fa.Load()
	c.fastChannel(r.relay.LocalAddr(), r.peer.LocalAddr(), 0x4000, true)
	return r
}

func (r *fastRig) clientAP() netip.AddrPort { return r.client.LocalAddr().(*net.UDPAddr).AddrPort() }

// recvIn waits for a datagram the loop handed to pion's read loop.
func (r *fastRig) recvIn(t testing.TB) (slowPacket, bool) {
	select {
	case p := <-r.lst.in:
		return p, true
	case <-time.After(500 * time.Millisecond):
		return slowPacket{}, false
	}
}

func (r *fastRig) lstAP() netip.AddrPort   { return r.lst.LocalAddr().(*net.UDPAddr).AddrPort() }
func (r *fastRig) relayAP() netip.AddrPort { return r.relay.LocalAddr().(*net.UDPAddr).AddrPort() }

func TestFastChannelDataBothWays(t *testing.T) {
	r := newFastRig(t)
	frame := make([]byte, 4+5)
	binary.BigEndian.PutUint16(frame[0:2], 0x4000)
	binary.BigEndian.PutUint16(frame[2:4], 5)
	copy(frame[4:], "hello")
	if _, err := r.client.WriteToUDPAddrPort(frame, r.lstAP()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1600)
	_ = r.peer.SetReadDeadline(time.Now().Add(testTimeout))
	n, from, err := r.peer.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hello" || from != r.relayAP() {
		t.Fatalf("peer got %q from %v, err %v", buf[:n], from, err)
	}
	// An unbound channel goes to pion.
	binary.BigEndian.PutUint16(frame[0:2], 0x4001)
	if _, err := r.client.WriteToUDPAddrPort(frame, r.lstAP()); err != nil {
		t.Fatal(err)
	}
	if p, ok := r.recvIn(t); !ok || binary.BigEndian.Uint16(p.b[0:2]) != 0x4001 || p.src != r.clientAP() {
		t.Fatalf("unbound channel not handed to pion: %v %v", p, ok)
	}

	// Peer to client: framed as ChannelData, padded to 4 bytes, from the listener socket.
	if _, err := r.peer.WriteToUDPAddrPort([]byte("world"), r.relayAP()); err != nil {
		t.Fatal(err)
	}
	_ = r.client.SetReadDeadline(time.Now().Add(testTimeout))
	n, from, err = r.client.ReadFromUDPAddrPort(buf)
	if err != nil || n != 12 || binary.BigEndian.Uint16(buf[0:2]) != 0x4000 || binary.BigEndian.Uint16(buf[2:4]) != 5 ||
		string(buf[4:9]) != "world" || buf[9]|buf[10]|buf[11] != 0 {
		t.Fatalf("client got % x, err %v", buf[:n], err)
	}
	if from != r.lstAP() {
		t.Fatalf("ChannelData came from %v, not the listener", from)
	}
	if got := r.relay.rec.pktsToPeer.Load(); got != 1 {
		t.Errorf("packets to peer %d, want 1", got)
	}
	if got := r.relay.rec.pktsToClient.Load(); got != 1 {
		t.Errorf("packets to client %d, want 1", got)
	}

	// After the channel is unbound, peer datagrams go to pion (ReadFrom) unframed.
	r.c.fastChannel(r.relay.LocalAddr(), r.peer.LocalAddr(), 0x4000, false)
	if _, err := r.peer.WriteToUDPAddrPort([]byte("later"), r.relayAP()); err != nil {
		t.Fatal(err)
	}
	n, src, err := r.relay.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "later" || src.String() != r.peer.LocalAddr().String() {
		t.Fatalf("unbound peer: %q from %v err %v", buf[:n], src, err)
	}
	// And the client's ChannelData on it goes to pion too.
	binary.BigEndian.PutUint16(frame[0:2], 0x4000)
	if _, err := r.client.WriteToUDPAddrPort(frame, r.lstAP()); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.recvIn(t); !ok {
		t.Fatal("ChannelData on an unbound channel not handed to pion")
	}
}

func TestFastChannelDataPeerFilter(t *testing.T) {
	r := newFastRig(t)
	// A peer the filter refuses (loopback, but not allowed and not a relay) is dropped per packet.
	r.c.settings.Store(newSettings(config.Default().TURN, nil))
	frame := []byte{0x40, 0x00, 0x00, 0x01, 'x', 0, 0, 0}
	if _, err := r.client.WriteToUDPAddrPort(frame, r.lstAP()); err != nil {
		t.Fatal(err)
	}
	_ = r.peer.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := r.peer.ReadFromUDPAddrPort(make([]byte, 100)); err == nil {
		t.Fatalf("refused peer got %d bytes", n)
	}
	if got := r.relay.rec.pktsToPeer.Load(); got != 0 {
		t.Fatalf("refused peer got %d packets", got)
	}
}

func TestFastBindingLive(t *testing.T) {
	r := newFastRig(t)
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.WriteToUDPAddrPort(req.Raw, r.lstAP()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1600)
	_ = r.client.SetReadDeadline(time.Now().Add(testTimeout))
	n, _, err := r.client.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	m := &stun.Message{Raw: buf[:n]}
	if err := m.Decode(); err != nil || m.Type != stun.BindingSuccess || m.TransactionID != req.TransactionID {
		t.Fatalf("answer %v %v", m, err)
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil || xa.Port != int(r.clientAP().Port()) {
		t.Fatalf("XOR-MAPPED-ADDRESS %v %v", xa, err)
	}
}

func TestFastBindingResponse(t *testing.T) {
	for _, src := range []string{"192.0.2.7:4242", "[2001:db8::1]:3478", "[::ffff:192.0.2.9]:1"} {
		ap := netip.MustParseAddrPort(src)
		req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		if err != nil {
			t.Fatal(err)
		}
		h, ok := parseSTUNHeader(req.Raw)
		if !ok || !plainBinding(req.Raw, h) {
			t.Fatal("plain Binding request not recognised")
		}
		out := appendBindingResponse(make([]byte, 0, bindingResponseMax), req.Raw, ap)
		m := &stun.Message{Raw: out}
		if err := m.Decode(); err != nil {
			t.Fatal(err)
		}
		if m.Type != stun.BindingSuccess || m.TransactionID != req.TransactionID {
			t.Fatalf("%s: type %v tid mismatch %v", src, m.Type, m.TransactionID != req.TransactionID)
		}
		if err := stun.Fingerprint.Check(m); err != nil {
			t.Fatalf("%s: fingerprint: %v", src, err)
		}
		var xa stun.XORMappedAddress
		if err := xa.GetFrom(m); err != nil {
			t.Fatal(err)
		}
		got, _ := netip.AddrFromSlice(xa.IP)
		if got.Unmap() != ap.Addr().Unmap() || xa.Port != int(ap.Port()) {
			t.Fatalf("%s: XOR-MAPPED-ADDRESS %v", src, xa)
		}
	}
	// An unknown comprehension-required attribute is left to pion (420).
	req, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.RawAttribute{Type: 0x0077, Value: []byte{1, 2, 3, 4}})
	h, _ := parseSTUNHeader(req.Raw)
	if plainBinding(req.Raw, h) {
		t.Fatal("unknown comprehension-required attribute accepted")
	}
}

// The hot paths must not allocate. Each benchmark drives the real loop through sockets:
// testing's allocation count covers the whole process, so 0 allocs/op means the loop
// relayed (or answered) without a single heap allocation.

func BenchmarkChannelDataClientToPeer(b *testing.B) {
	r := newFastRig(b)
	frame := make([]byte, 4+160)
	binary.BigEndian.PutUint16(frame[0:2], 0x4000)
	binary.BigEndian.PutUint16(frame[2:4], 160)
	buf := make([]byte, 1600)
	lst := r.lstAP()
	b.ReportAllocs()
	b.SetBytes(160)
	for b.Loop() {
		if _, err := r.client.WriteToUDPAddrPort(frame, lst); err != nil {
			b.Fatal(err)
		}
		if n, _, err := r.peer.ReadFromUDPAddrPort(buf); err != nil || n != 160 {
			b.Fatal("not relayed", n, err)
		}
	}
}

// BenchmarkChannelDataPeerToClient sends a datagram from the peer to the relay and waits
// for the relay loop's ChannelData at the client.
func BenchmarkChannelDataPeerToClient(b *testing.B) {
	r := newFastRig(b)
	payload := make([]byte, 160)
	relayAP := r.relayAP()
	buf := make([]byte, 1600)
	b.ReportAllocs()
	b.SetBytes(160)
	for b.Loop() {
		if _, err := r.peer.WriteToUDPAddrPort(payload, relayAP); err != nil {
			b.Fatal(err)
		}
		if n, _, err := r.client.ReadFromUDPAddrPort(buf); err != nil || n != 164 {
			b.Fatal("not relayed", n, err)
		}
	}
}

func BenchmarkChannelDataFrame(b *testing.B) {
	buf := make([]byte, 1600)
	b.ReportAllocs()
	for b.Loop() {
		frameChannelData(buf, 0x4000, 161)
	}
}

func BenchmarkBindingAnswer(b *testing.B) {
	r := newFastRig(b)
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1600)
	lst := r.lstAP()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.client.WriteToUDPAddrPort(req.Raw, lst); err != nil {
			b.Fatal(err)
		}
		if n, _, err := r.client.ReadFromUDPAddrPort(buf); err != nil || n != 40 {
			b.Fatal("not answered", n, err)
		}
	}
}

func BenchmarkBindingEncode(b *testing.B) {
	req, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	out := make([]byte, 0, bindingResponseMax)
	src := netip.MustParseAddrPort("192.0.2.1:3478")
	b.ReportAllocs()
	for b.Loop() {
		appendBindingResponse(out, req.Raw, src)
	}
}
