//go:build linux

package xdprelay

import (
	"net/netip"
	"testing"
	"time"

	"icehub/internal/vethbed"
)

// Sizes around every padding case (data length mod 4), the empty edge, and a datagram near
// the 1500-byte MTU.
var sizes = []int{0, 1, 2, 3, 4, 5, 6, 7, 100, 159, 160, 1000, 1399, 1400, 1401, 1402, 1403}

func TestRelayBothWaysByteIdentical(t *testing.T) {
	r := newRig(t, 1)
	b := r.binding(0)
	if err := r.off.Bind(b); err != nil {
		t.Fatal(err)
	}
	client := r.clients[0]
	var want Counters
	padded := 0
	for _, n := range sizes {
		data := payload(n, byte(n))
		// Client → peer, with every legal amount of padding, zero and non-zero bytes: the
		// padding leaves the checksum too, so garbage there must not corrupt the result.
		for _, pad := range []int{(4 - n%4) % 4, 0, 3} {
			for _, pb := range []byte{0, 0xa5} {
				r.send(client, b.Listen, channelData(b.Channel, data, pad, pb))
				r.expect(r.peer, data, b.Relay)
				want.ToPeerPackets++
				want.ToPeerBytes += uint64(n)
			}
		}
		// Peer → client: ChannelData padded to 4 with zeros, as pion sends it.
		r.send(r.peer, b.Relay, data)
		if r.expectChannelData(client, b.Channel, data, b.Listen) {
			padded++
		}
		want.ToClientPackets++
		want.ToClientBytes += uint64(n)
	}
	r.silent(r.listen, "offloaded ChannelData")
	r.silent(r.relay, "offloaded peer data")
	t.Logf("%d of the peer's datagrams that needed padding were padded", padded)
	if got, ok := r.off.Counters(b.Alloc); !ok || got != want {
		t.Fatalf("counters %+v (ok %v), want %+v", got, ok, want)
	}
	if got, all := r.off.Total(), want.ToPeerPackets+want.ToClientPackets; got != all {
		t.Fatalf("Total %d, want %d", got, all)
	}
	if v := r.verdicts(); v["redirect"] != r.off.Total() || v["tx"] != 0 {
		t.Fatalf("verdicts %v: want every packet redirected between the two interfaces", v)
	}
	if e := r.udpCsumErrors(r.bed.Client) + r.udpCsumErrors(r.bed.Peer); e != 0 {
		t.Fatalf("%d UDP checksum errors at the receivers", e)
	}
}

// TestPassUnchanged sends what the program must not touch and checks that it reaches the
// user-space sockets byte for byte.
func TestPassUnchanged(t *testing.T) {
	r := newRig(t, 2)
	b := r.binding(0)
	if err := r.off.Bind(b); err != nil {
		t.Fatal(err)
	}
	bound, stranger := r.clients[0], r.clients[1]
	data := payload(100, 1)
	stun := []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	cases := []struct {
		name string
		from func() // sends it
		to   func() // expects it
	}{
		{"unknown client", func() { r.send(stranger, b.Listen, channelData(b.Channel, data, 0, 0)) },
			func() { r.expect(r.listen, channelData(b.Channel, data, 0, 0), addrOf(stranger)) }},
		{"STUN from a bound client", func() { r.send(bound, b.Listen, stun) },
			func() { r.expect(r.listen, stun, addrOf(bound)) }},
		{"unbound channel", func() { r.send(bound, b.Listen, channelData(0x4abc, data, 0, 0)) },
			func() { r.expect(r.listen, channelData(0x4abc, data, 0, 0), addrOf(bound)) }},
		{"length beyond datagram", func() { r.send(bound, b.Listen, channelData(b.Channel, data, 0, 0)[:50]) },
			func() { r.expect(r.listen, channelData(b.Channel, data, 0, 0)[:50], addrOf(bound)) }},
		{"4 bytes past the data", func() { r.send(bound, b.Listen, channelData(b.Channel, data, 4, 0)) },
			func() { r.expect(r.listen, channelData(b.Channel, data, 4, 0), addrOf(bound)) }},
		{"fragmented", func() { r.send(bound, b.Listen, channelData(b.Channel, payload(3000, 2), 0, 0)) },
			func() { r.expect(r.listen, channelData(b.Channel, payload(3000, 2), 0, 0), addrOf(bound)) }},
		{"unknown peer port", func() { r.sendFromPeerPort(peerPort+1, b.Relay, data) },
			func() { r.expect(r.relay, data, netip.AddrPortFrom(addrOf(r.peer).Addr(), peerPort+1)) }},
		{"IP options", func() { r.sendWithIPOptions(b, channelData(b.Channel, data, 0, 0)) },
			func() { r.expect(r.listen, channelData(b.Channel, data, 0, 0), addrOf(bound)) }},
	}
	for _, c := range cases {
		before := r.off.Total()
		c.from()
		c.to()
		if r.off.Total() != before {
			t.Fatalf("%s: the program relayed it", c.name)
		}
	}
	v := r.verdicts()
	if v["not_plain_udp"] < 3 || v["no_binding"] < 4 || v["bad_length"] < 2 {
		t.Fatalf("verdicts %v: want fragments and options as not_plain_udp, strangers as no_binding, lengths as bad_length", v)
	}
	r.nonUDPStillWorks()
}

func (r *rig) sendFromPeerPort(port int, to netip.AddrPort, data []byte) {
	r.t.Helper()
	r.do(r.bed.Peer, func() error {
		c, err := listenUDP(udpAddr(r.bed.PeerIPs[0], port))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.WriteToUDPAddrPort(data, to)
		return err
	})
}

func TestUnbindAndRemoveAllocation(t *testing.T) {
	r := newRig(t, 2)
	b0, b1 := r.binding(0), r.binding(1)
	b1.Relay = netip.AddrPortFrom(b1.Relay.Addr(), relayPort) // same relay socket, other peer port
	b1.Peer = netip.AddrPortFrom(b1.Peer.Addr(), peerPort+1)
	for _, b := range []Binding{b0, b1} {
		if err := r.off.Bind(b); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.off.Bindings(); len(got) != 2 || got[0] != b0 || got[1] != b1 {
		t.Fatalf("Bindings() = %v", got)
	}
	data := payload(64, 3)
	r.send(r.clients[0], b0.Listen, channelData(b0.Channel, data, 0, 0))
	r.expect(r.peer, data, b0.Relay)

	if err := r.off.Unbind(b0); err != nil {
		t.Fatal(err)
	}
	// Now both directions of channel 0 reach the sockets, unchanged.
	r.send(r.clients[0], b0.Listen, channelData(b0.Channel, data, 0, 0))
	r.expect(r.listen, channelData(b0.Channel, data, 0, 0), b0.Client)
	r.send(r.peer, b0.Relay, data)
	r.expect(r.relay, data, b0.Peer)
	r.silent(r.clients[0], "peer data after Unbind")

	total := r.off.Total()
	c, err := r.off.RemoveAllocation(b1.Alloc)
	if err != nil || c != (Counters{}) {
		t.Fatalf("RemoveAllocation = %+v, %v; want zero counters (nothing relayed yet)", c, err)
	}
	r.send(r.clients[1], b1.Listen, channelData(b1.Channel, data, 0, 0))
	r.expect(r.listen, channelData(b1.Channel, data, 0, 0), b1.Client)
	if _, ok := r.off.Counters(b1.Alloc); ok || len(r.off.Bindings()) != 0 {
		t.Fatalf("allocation still known after RemoveAllocation: %v", r.off.Bindings())
	}
	if r.off.Total() != total {
		t.Fatal("relayed after everything was removed")
	}
	// Nothing left in the kernel either: the Go side's view is not the only truth.
	for _, m := range []interface{ NextKey(any, any) error }{r.off.objs.ClientBindings, r.off.objs.PeerBindings, r.off.objs.Nexthops} {
		var k [64]byte
		if err := m.NextKey(nil, &k); err == nil {
			t.Fatalf("a kernel map still holds an entry after everything was removed")
		}
	}
}

// TestSameInterfaceUsesXDPTX relays between a client and a "peer" on the same link (the
// relay address on the client side), which goes back out of the ingress interface.
func TestSameInterfaceUsesXDPTX(t *testing.T) {
	r := newRig(t, 2)
	b := r.binding(0)
	other := r.clients[1] // plays the peer, on the client link
	b.Relay = netip.AddrPortFrom(vethbed.RelayClientSide, relayPort)
	b.Peer = addrOf(other)
	r.do(r.bed.Relay, func() error {
		c, err := listenUDP(udpAddr(vethbed.RelayClientSide, relayPort))
		if err == nil {
			r.t.Cleanup(func() { c.Close() })
		}
		return err
	})
	if err := r.off.Bind(b); err != nil {
		t.Fatal(err)
	}
	data := payload(33, 4)
	r.send(r.clients[0], b.Listen, channelData(b.Channel, data, 3, 0))
	r.expect(other, data, b.Relay)
	r.send(other, b.Relay, data)
	r.expectChannelData(r.clients[0], b.Channel, data, b.Listen)
	if v := r.verdicts(); v["tx"] != 2 {
		t.Fatalf("verdicts %v: want 2 XDP_TX", v)
	}
}

// TestUnresolvedNeighbourGoesToUserSpace binds a peer the relay host has never talked to:
// the first packet goes to the socket (user space relays it, which resolves the
// neighbour), and once the refresher has seen the neighbour the kernel takes over.
func TestUnresolvedNeighbourGoesToUserSpace(t *testing.T) {
	r := newRig(t, 1)
	b := r.binding(0)
	r.do(r.bed.Peer, func() (err error) {
		r.peer.Close()
		r.peer, err = listenUDP(udpAddr(r.bed.PeerIPs[1], peerPort)) // never warmed
		return err
	})
	b.Peer = addrOf(r.peer)
	if err := r.off.Bind(b); err != nil {
		t.Fatal(err)
	}
	data := payload(20, 5)
	r.send(r.clients[0], b.Listen, channelData(b.Channel, data, 0, 0))
	r.expect(r.listen, channelData(b.Channel, data, 0, 0), b.Client)
	if v := r.verdicts(); v["no_nexthop"] == 0 {
		t.Fatalf("verdicts %v: want no_nexthop", v)
	}
	r.send(r.relay, b.Peer, data) // what user space does with it
	r.expect(r.peer, data, b.Relay)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.send(r.clients[0], b.Listen, channelData(b.Channel, data, 0, 0))
		if got, _, ok := recv(r.peer, 200*time.Millisecond); ok && string(got) == string(data) {
			break
		}
		if _, _, ok := recv(r.listen, 10*time.Millisecond); !ok || time.Now().After(deadline) {
			t.Fatal("the neighbour never made it into the next-hop table")
		}
	}
}
