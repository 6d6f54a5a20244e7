//go:build linux

package turnserver

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// loopRig is the UDP loop without pion: a listener socket, one allocation with a relay
// socket and channel 0x4000 bound to a peer socket, and a client socket.
type loopRig struct {
	s      *Server
	lst    *loopListener
	relay  *loopRelay
	rec    *relayRecord
	client *net.UDPConn
	peer   *net.UDPConn
}

func newLoopRig(tb testing.TB) *loopRig {
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
	s := &Server{log: slog.New(slog.DiscardHandler), m: m, relays: newRelaySet(), quotas: newQuotas(), handoff: newKeyHandoff(),
		nonces: newSourceNonces(), sourceLog: newSourceLog(slog.New(slog.DiscardHandler)), conns: newConnCounter(), now: time.Now}
	set := defaultSettings
	set.AllowPeers = []netip.Prefix{mustPrefix("127.0.0.1/32")}
	s.policy.Store(newPolicy(set, nil))
	r := &loopRig{s: s, client: listen(), peer: listen()}
	_ = r.client.SetReadBuffer(8 << 20)
	lst, err := newLoopListener(listen(), s.newAdmission(nil, false))
	if err != nil {
		tb.Fatal(err)
	}
	r.lst = lst
	tb.Cleanup(func() { _ = r.lst.Close() })
	// A relay on a port the kernel picks: bind one, note the port, free it, bind it again.
	probe := listen()
	bind := probe.LocalAddr().(*net.UDPAddr).AddrPort()
	_ = probe.Close()
	r.rec = &relayRecord{network: "udp", advertised: bind, bind: bind, user: "u", owner: r.lst}
	conn, _, err := r.lst.openRelay("udp4", r.rec)
	if err != nil {
		tb.Fatal(err)
	}
	r.relay = conn.(*loopRelay)
	tb.Cleanup(func() { _ = r.relay.Close() })
	r.rec.conn = r.relay
	s.relays.add(r.rec)
	r.lst.allocationCreated(r.client.LocalAddr(), r.rec)
	r.lst.channelChanged(r.rec, r.peerAP(), 0x4000, true)
	return r
}

func (r *loopRig) clientAP() netip.AddrPort { return r.client.LocalAddr().(*net.UDPAddr).AddrPort() }
func (r *loopRig) peerAP() netip.AddrPort   { return r.peer.LocalAddr().(*net.UDPAddr).AddrPort() }

// recvIn waits for a datagram the loop handed to pion's read loop.
func (r *loopRig) recvIn(t testing.TB) (pionPacket, bool) {
	select {
	case p := <-r.lst.toPion:
		return p, true
	case <-time.After(500 * time.Millisecond):
		return pionPacket{}, false
	}
}

func (r *loopRig) lstAP() netip.AddrPort   { return r.lst.LocalAddr().(*net.UDPAddr).AddrPort() }
func (r *loopRig) relayAP() netip.AddrPort { return r.relay.LocalAddr().(*net.UDPAddr).AddrPort() }

func TestLoopChannelDataBothWays(t *testing.T) {
	r := newLoopRig(t)
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
	r.lst.channelChanged(r.rec, r.peerAP(), 0x4000, false)
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

func TestLoopChannelDataPeerFilter(t *testing.T) {
	r := newLoopRig(t)
	// A peer the filter refuses (loopback, but not allowed and not a relay) is dropped per packet.
	r.s.policy.Store(newPolicy(defaultSettings, nil))
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

func TestLoopBindingLive(t *testing.T) {
	r := newLoopRig(t)
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

// The hot paths must not allocate. Each benchmark drives the real loop through sockets:
// testing's allocation count covers the whole process, so 0 allocs/op means the loop
// relayed (or answered) without a single heap allocation.

func BenchmarkChannelDataClientToPeer(b *testing.B) {
	r := newLoopRig(b)
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
	r := newLoopRig(b)
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

func BenchmarkBindingAnswer(b *testing.B) {
	r := newLoopRig(b)
	// As long as its answer, so that it earns it: a bare request is 12 bytes shorter, and its
	// one source ran out of answer credit after a few hundred iterations, which left the
	// benchmark (and `go test -bench .`) waiting for an answer forever.
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("icehub bench"), stun.Fingerprint)
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

// BenchmarkChannelDataCapped is the fast path both ways under turn.max_bitrate and
// turn.total_bitrate (set high enough that nothing is dropped): the caps' checks must not
// allocate either.
func BenchmarkChannelDataCapped(b *testing.B) {
	r := newLoopRig(b)
	set := defaultSettings
	set.AllowPeers = []netip.Prefix{mustPrefix("127.0.0.1/32")}
	set.MaxBitrate, set.TotalBitrate = 100_000_000_000, 100_000_000_000
	r.s.policy.Store(newPolicy(set, nil))
	frame := make([]byte, 4+160)
	binary.BigEndian.PutUint16(frame[0:2], 0x4000)
	binary.BigEndian.PutUint16(frame[2:4], 160)
	payload := make([]byte, 160)
	buf := make([]byte, 1600)
	lst, relayAP := r.lstAP(), r.relayAP()
	b.ReportAllocs()
	b.SetBytes(2 * 160)
	for b.Loop() {
		if _, err := r.client.WriteToUDPAddrPort(frame, lst); err != nil {
			b.Fatal(err)
		}
		if n, _, err := r.peer.ReadFromUDPAddrPort(buf); err != nil || n != 160 {
			b.Fatal("not relayed to the peer", n, err)
		}
		if _, err := r.peer.WriteToUDPAddrPort(payload, relayAP); err != nil {
			b.Fatal(err)
		}
		if n, _, err := r.client.ReadFromUDPAddrPort(buf); err != nil || n != 164 {
			b.Fatal("not relayed to the client", n, err)
		}
	}
}
