//go:build linux

package xdprelay

import (
	"net"
	"testing"

	"icehub/internal/vethbed"
)

// TestRelayIPv6 runs the byte-identical check over IPv6: no header checksum, a 40-byte
// header, and a UDP checksum that may never be zero.
func TestRelayIPv6(t *testing.T) {
	r := newRig(t, 1)
	var listen, relay, client, peer *net.UDPConn
	r.do(r.bed.Relay, func() (err error) {
		if listen, err = listenUDP(udpAddr(vethbed.RelayClientSide6, listenPort)); err != nil {
			return err
		}
		relay, err = listenUDP(udpAddr(vethbed.RelayPeerSide6, relayPort))
		return err
	})
	r.do(r.bed.Client, func() (err error) { client, err = listenUDP(udpAddr(r.bed.ClientIP6, 40000)); return err })
	r.do(r.bed.Peer, func() (err error) { peer, err = listenUDP(udpAddr(r.bed.PeerIP6, peerPort)); return err })
	t.Cleanup(func() { listen.Close(); relay.Close(); client.Close(); peer.Close() })
	b := Binding{Alloc: 7, Client: addrOf(client), Listen: addrOf(listen), Relay: addrOf(relay), Peer: addrOf(peer), Channel: 0x4123}
	r.send(listen, b.Client, []byte("warm")) // neighbour discovery, as the Allocate answers would
	r.expect(client, []byte("warm"), b.Listen)
	r.send(relay, b.Peer, []byte("warm"))
	r.expect(peer, []byte("warm"), b.Relay)
	if err := r.off.Bind(b); err != nil {
		t.Fatal(err)
	}
	for _, n := range sizes {
		data := payload(n, byte(n)+9)
		r.send(client, b.Listen, channelData(b.Channel, data, 3, 0x5a))
		r.expect(peer, data, b.Relay)
		r.send(peer, b.Relay, data)
		r.expectChannelData(client, b.Channel, data, b.Listen)
	}
	r.silent(listen, "offloaded ChannelData")
	r.silent(relay, "offloaded peer data")
	if c, _ := r.off.Counters(b.Alloc); c.ToPeerPackets != uint64(len(sizes)) || c.ToClientPackets != uint64(len(sizes)) {
		t.Fatalf("counters %+v, want %d each way", c, len(sizes))
	}
	if e := r.udpCsumErrors(r.bed.Client) + r.udpCsumErrors(r.bed.Peer); e != 0 {
		t.Fatalf("%d UDP checksum errors at the receivers", e)
	}
	// A mixed-family channel is refused, so the caller keeps it in user space.
	mixed := b
	mixed.Relay, mixed.Peer = r.binding(0).Relay, r.binding(0).Peer
	if err := r.off.Bind(mixed); err == nil {
		t.Fatal("Bind accepted an IPv6 client relayed to an IPv4 peer")
	}
}
