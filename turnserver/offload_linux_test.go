//go:build linux

package turnserver

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"icehub/internal/testenv"
	"icehub/internal/vethbed"
)

// TestOffloadXDP proves the XDP offload wired into the server (issue 16): with the program
// attached to the relay namespace's interfaces, channels of pion's client and of coturn's
// turnutils_uclient are relayed in the kernel, byte for byte, and leave the kernel exactly
// when pion's state or the peer filter says so.
func TestOffloadXDP(t *testing.T) {
	bed := inRelayNamespace(t)
	if bed == nil {
		return
	}
	warmNeighbours(t, bed)
	t.Run("both ways byte-identical in the kernel", func(t *testing.T) { offloadRoundTrips(t, bed) })
	t.Run("channel expiry", func(t *testing.T) { offloadChannelExpiry(t, bed) })
	t.Run("permission expiry", func(t *testing.T) { offloadPermissionExpiry(t, bed) })
	t.Run("reload denying the peer", func(t *testing.T) { offloadReloadDenies(t, bed) })
	t.Run("refused and own-relay peers", func(t *testing.T) { offloadRefusedPeers(t, bed) })
	t.Run("odd packets take the socket path", func(t *testing.T) { offloadOddPackets(t, bed) })
	t.Run("an allocation's share of the kernel", func(t *testing.T) { offloadChannelCap(t, bed) })
	t.Run("turnutils_uclient", func(t *testing.T) { offloadUclient(t, bed) })
}

// Sizes around every padding case (payload length mod 4) up to a near-MTU datagram.
var offloadSizes = []int{1, 2, 3, 4, 5, 6, 7, 8, 100, 159, 160, 161, 1000, 1399, 1400}

func payloadOf(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13) ^ seed
	}
	return b
}

func offloadRoundTrips(t *testing.T, bed *vethbed.Bed) {
	// No periodic sync: what the kernel relayed reaches the log line and the metrics
	// through the allocation's deletion alone.
	b := startBedServer(t, bed, func(c *Config) { c.offloadSync = time.Hour })
	c := b.client(t, 0, "alice")
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	peer := b.peer(t, 0)
	csum0 := udpCsumErrors(t, bed, bed.Client) + udpCsumErrors(t, bed, bed.Peer)
	total := b.offloaded(t, relay, peer)
	bs := b.bindings()
	if len(bs) != 1 || bs[0].Peer.String() != peer.LocalAddr().String() ||
		bs[0].Relay.String() != relay.LocalAddr().String() || bs[0].Listen != bedListen {
		t.Fatalf("kernel bindings %v: want the one channel, client → %v, relay %v → peer %v", bs, bedListen, relay.LocalAddr(), peer.LocalAddr())
	}
	relayedBefore := b.metric(t, "icehub_turn_relayed_packets_total", map[string]string{"direction": "to_peer"})
	var bytesUp uint64
	for _, n := range offloadSizes {
		relayData(t, relay, peer, payloadOf(n, byte(n)))
		bytesUp += uint64(n)
	}
	if got := b.offload().Total() - total; got != 2*uint64(len(offloadSizes)) {
		t.Fatalf("the kernel relayed %d of %d datagrams", got, 2*len(offloadSizes))
	}
	if e := udpCsumErrors(t, bed, bed.Client) + udpCsumErrors(t, bed, bed.Peer) - csum0; e != 0 {
		t.Fatalf("%d UDP checksum errors at the receivers", e)
	}
	id := bs[0].Alloc

	// Refresh 0: the allocation leaves the kernel, and its log line and the metrics count
	// what the kernel relayed for it.
	if err := relay.Close(); err != nil {
		t.Fatal(err)
	}
	b.waitBindings(t, 0, "after Refresh 0")
	m := b.log.waitLine(t, `turn allocation deleted" user=alice .*bytes_to_peer=(\d+) bytes_to_client=(\d+) packets_to_peer=(\d+) packets_to_client=(\d+)`)
	up, _ := strconv.ParseUint(m[1], 10, 64)
	pkts, _ := strconv.ParseUint(m[3], 10, 64)
	if up < bytesUp || pkts < uint64(len(offloadSizes)) {
		t.Fatalf("deletion log line counts %d bytes / %d packets to the peer, want at least the %d / %d the kernel relayed:\n%s",
			up, pkts, bytesUp, len(offloadSizes), m[0])
	}
	if got := b.metric(t, "icehub_turn_relayed_packets_total", map[string]string{"direction": "to_peer"}) - relayedBefore; got < float64(len(offloadSizes)) {
		t.Fatalf("icehub_turn_relayed_packets_total{to_peer} rose by %v, want at least the %d the kernel relayed", got, len(offloadSizes))
	}
	if _, ok := b.offload().Counters(id); ok {
		t.Fatal("the kernel still counts for the deleted allocation")
	}
	b.srv.offload.mu.Lock()
	left := len(b.srv.offload.allocs)
	b.srv.offload.mu.Unlock()
	if left != 0 {
		t.Fatalf("the offloader still tracks %d allocations", left)
	}
	// Nothing of the allocation is left to relay: the client's ChannelData finds no entry.
	before := b.offload().Total()
	_, _ = relay.WriteTo([]byte("after close"), peer.LocalAddr())
	if got, _, ok := recvUDP(peer, 300*time.Millisecond); ok {
		t.Fatalf("peer got %q after Refresh 0", got)
	}
	if b.offload().Total() != before {
		t.Fatal("the kernel relayed after Refresh 0")
	}
}

func offloadChannelExpiry(t *testing.T, bed *vethbed.Bed) {
	// Long enough for offloaded's probes to find the channel in the kernel on a loaded
	// machine, short enough for waitBindings to see it expire.
	b := startBedServer(t, bed, func(c *Config) { c.channelLifetime = 3 * time.Second })
	relay, err := b.client(t, 0, "bob").Allocate()
	if err != nil {
		t.Fatal(err)
	}
	peer := b.peer(t, 0)
	b.offloaded(t, relay, peer)
	// pion's client refreshes channels every 5 minutes: the server's three seconds run out.
	b.waitBindings(t, 0, "after the channel expired")
	before := b.offload().Total()
	_, _ = peer.WriteTo([]byte("after expiry"), relay.LocalAddr())
	_, _ = relay.WriteTo([]byte("after expiry"), peer.LocalAddr()) // ChannelData on a dead channel
	if got, _, ok := recvUDP(peer, 300*time.Millisecond); ok {
		t.Fatalf("peer got %q on an expired channel", got)
	}
	if b.offload().Total() != before {
		t.Fatal("the kernel relayed on an expired channel")
	}
}

func offloadPermissionExpiry(t *testing.T, bed *vethbed.Bed) {
	b := startBedServer(t, bed, func(c *Config) { c.permissionLifetime = 3 * time.Second }) // as in offloadChannelExpiry
	relay, err := b.client(t, 0, "carol").Allocate()
	if err != nil {
		t.Fatal(err)
	}
	peer := b.peer(t, 0)
	b.offloaded(t, relay, peer)
	// pion's client refreshes permissions every 2 minutes: the server's three seconds run
	// out while the channel (10 minutes) lives on. The kernel lets go of the channel; what
	// user space then does with its packets is pion's rule, not the offload's.
	b.waitBindings(t, 0, "after the permission expired")
	before := b.offload().Total()
	_, _ = peer.WriteTo([]byte("no permission"), relay.LocalAddr())
	_, _ = relay.WriteTo([]byte("no permission"), peer.LocalAddr())
	recvUDP(peer, 300*time.Millisecond)
	if b.offload().Total() != before {
		t.Fatal("the kernel relayed after the permission expired")
	}
}

func offloadReloadDenies(t *testing.T, bed *vethbed.Bed) {
	b := startBedServer(t, bed, nil)
	relay, err := b.client(t, 0, "dave").Allocate()
	if err != nil {
		t.Fatal(err)
	}
	peer := b.peer(t, 0)
	b.offloaded(t, relay, peer)
	reload := func(s Settings) {
		t.Helper()
		commit, err := b.srv.PrepareReload(s)
		if err != nil {
			t.Fatal(err)
		}
		commit()
	}
	deny := b.cfg.Settings
	deny.DenyPeers = []netip.Prefix{netip.PrefixFrom(b.bed.PeerIPs[0], 32)}
	reload(deny)
	if bs := b.bindings(); len(bs) != 0 {
		t.Fatalf("the kernel still holds %v after a reload denied the peer", bs)
	}
	// Nothing is relayed to the denied peer, by the kernel or by user space.
	before := b.offload().Total()
	for range 3 {
		_, _ = relay.WriteTo([]byte("denied"), peer.LocalAddr())
	}
	if got, _, ok := recvUDP(peer, 300*time.Millisecond); ok {
		t.Fatalf("denied peer got %q", got)
	}
	_, _ = peer.WriteTo([]byte("from denied"), relay.LocalAddr())
	time.Sleep(100 * time.Millisecond)
	if b.offload().Total() != before {
		t.Fatal("the kernel relayed for a denied peer")
	}
	// A reload that opens the peer again returns the channel to the kernel.
	reload(b.cfg.Settings)
	b.waitBindings(t, 1, "after a reload allowed the peer again")
	drain(relay)
	b.offloaded(t, relay, peer)
}

// waitChannels waits up to 5 s until the number of channels the offloader knows of, in all
// allocations, satisfies ok; it reports whether it did.
func (b *bedServer) waitChannels(ok func(int) bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := 0
		b.srv.offload.mu.Lock()
		for _, a := range b.srv.offload.allocs {
			n += len(a.channels)
		}
		b.srv.offload.mu.Unlock()
		if ok(n) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// drain empties what a relay conn has queued (datagrams a test let through on purpose).
func drain(c net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := c.ReadFrom(buf); err != nil {
			return
		}
	}
}

func offloadRefusedPeers(t *testing.T, bed *vethbed.Bed) {
	refused := bed.PeerIPs[2]
	b := startBedServer(t, bed, func(c *Config) {
		// Only the first peer is open: 203.0.113.1, the relays' own address, is
		// documentation space the default filter closes, reachable only through the
		// own-relay exception; the third peer is denied outright.
		c.Settings.AllowPeers = []netip.Prefix{netip.PrefixFrom(bed.PeerIPs[0], 32)}
		c.Settings.DenyPeers = []netip.Prefix{netip.PrefixFrom(refused, 32)}
	})
	ca, cb := b.client(t, 0, "erin"), b.client(t, 1, "frank")
	ra, err := ca.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	rb, err := cb.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	// A refused peer gets no permission, so no channel and no entry.
	bad := &net.UDPAddr{IP: refused.AsSlice(), Port: 9}
	if err := ca.CreatePermission(bad); turnCode(err) != 403 {
		t.Fatalf("CreatePermission %v: %v, want 403", bad, err)
	}
	_, _ = ra.WriteTo([]byte("refused"), bad)
	// Two clients of this server reach each other through their relays (the own-relay
	// exception), over channels pion binds; those stay in user space.
	if err := cb.CreatePermission(ra.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		msg := "relay to relay " + strconv.Itoa(i)
		if _, err := ra.WriteTo([]byte(msg), rb.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		_ = rb.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, from, err := rb.ReadFrom(buf)
		if err != nil || string(buf[:n]) != msg || from.String() != ra.LocalAddr().String() {
			t.Fatalf("relay to relay: %q from %v, %v", buf[:n], from, err)
		}
	}
	// pion's client binds its channel asynchronously; the offloader decides on the kernel
	// when it learns of the channel, so once it knows of one the kernel's table is final.
	if !b.waitChannels(func(n int) bool { return n > 0 }) {
		t.Fatal("pion bound no channel to the other relay: the test proves nothing")
	}
	if bs := b.bindings(); len(bs) != 0 {
		t.Fatalf("kernel bindings %v: refused and own-relay peers must stay out", bs)
	}
	if b.offload().Total() != 0 {
		t.Fatal("the kernel relayed for a refused or own-relay peer")
	}
}

func offloadOddPackets(t *testing.T, bed *vethbed.Bed) {
	b := startBedServer(t, bed, nil)
	c := b.client(t, 0, "grace")
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	peer := b.peer(t, 0)
	b.offloaded(t, relay, peer)
	before := b.offload().Total()
	// A STUN Binding request from the bound client: answered by the server.
	mapped, err := c.SendBindingRequest()
	if err != nil || !strings.HasPrefix(mapped.String(), bed.ClientIPs[0].String()+":") {
		t.Fatalf("Binding: %v, %v", mapped, err)
	}
	// Datagrams too large for one frame (but not for user space's 1600-byte buffers):
	// their fragments pass to the stack, which reassembles them for user space, which
	// relays the payload (fragmented again), both ways.
	big := payloadOf(1546, 7)
	relayData(t, relay, peer, big)
	if v, _ := b.offload().Verdicts(); v["not_plain_udp"] == 0 {
		t.Fatalf("verdicts %v: the fragments were not seen and passed", v)
	}
	if got := b.offload().Total(); got != before {
		t.Fatalf("the kernel relayed %d odd packets", got-before)
	}
	// The channel is still in the kernel for ordinary packets.
	b.offloaded(t, relay, peer)
}

// offloadChannelCap: one client binding more channels than its share gets the rest relayed
// in user space; the kernel's table stays for everyone else.
func offloadChannelCap(t *testing.T, bed *vethbed.Bed) {
	const share = 3
	b := startBedServer(t, bed, func(c *Config) { c.offloadChannels = share })
	relay, err := b.client(t, 0, "heidi").Allocate()
	if err != nil {
		t.Fatal(err)
	}
	var peers []*net.UDPConn
	for range share + 2 {
		peers = append(peers, b.peer(t, 0))
	}
	// pion's client binds a channel per peer on its first packets, asynchronously; every
	// peer keeps receiving, in the kernel or not, while it does and once it has.
	send := func(round int) {
		for i, p := range peers {
			relayData(t, relay, p, []byte("peer "+strconv.Itoa(i)+" round "+strconv.Itoa(round)))
		}
	}
	send(0)
	var chans int
	if !b.waitChannels(func(n int) bool { chans = n; return n == len(peers) }) {
		t.Fatalf("pion bound %d channels, want %d: the test proves nothing", chans, len(peers))
	}
	send(1)
	if bs := b.bindings(); len(bs) != share {
		t.Fatalf("the kernel holds %d of the allocation's %d channels, want its share of %d: %v", len(bs), chans, share, bs)
	}
}

func offloadUclient(t *testing.T, bed *vethbed.Bed) {
	testenv.Tool(t, "turnutils_uclient", "coturn")
	testenv.Tool(t, "turnutils_peer", "coturn")
	b := startBedServer(t, bed, nil)
	const peerPort = "3480"
	ctx, cancel := context.WithCancel(context.Background())
	peer := exec.CommandContext(ctx, "ip", "netns", "exec", bed.Peer, "turnutils_peer", "-p", peerPort, "-L", bed.PeerIPs[0].String())
	var peerOut strings.Builder
	peer.Stdout, peer.Stderr = &peerOut, &peerOut
	if err := peer.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = peer.Wait()
	})
	// uclient must lose nothing: it starts once the peer echoes (probed from the peer's
	// namespace, so the relay sees none of it).
	port, _ := strconv.Atoi(peerPort)
	if !waitEcho(b.peer(t, 1), &net.UDPAddr{IP: bed.PeerIPs[0].AsSlice(), Port: port}, 10*time.Second) {
		cancel()
		_ = peer.Wait() // its output is complete
		t.Fatalf("turnutils_peer on %s:%s does not echo:\n%s", bed.PeerIPs[0], peerPort, peerOut.String())
	}
	before := b.offload().Total()
	ucx, ucancel := context.WithTimeout(context.Background(), time.Minute)
	defer ucancel()
	out, err := exec.CommandContext(ucx, "ip", "netns", "exec", bed.Client, "turnutils_uclient",
		"-W", testSecret1, "-u", "uclient", "-n", "100", "-m", "2", "-l", "160",
		"-e", bed.PeerIPs[0].String(), "-r", peerPort, "-p", strconv.Itoa(int(bedListen.Port())),
		bedListen.Addr().String()).CombinedOutput()
	checkNoLoss(t, string(out), err)
	s := sentRe.FindAllStringSubmatch(string(out), -1)
	sent, _ := strconv.ParseUint(s[len(s)-1][1], 10, 64)
	got := b.offload().Total() - before
	t.Logf("turnutils_uclient: %d messages echoed, %d datagrams relayed in the kernel", sent, got)
	// Each echoed message crosses the relay twice. Its first ones may take user space
	// while the channels and next hops settle; most must go through the kernel.
	if got < sent {
		t.Fatalf("the kernel relayed %d datagrams of the %d uclient's %d echoes crossed", got, 2*sent, sent)
	}
	// The kernel's counts reach the metrics (synced every 50 ms here): the offloaded
	// packets, and the relayed packets they are part of.
	deadline := time.Now().Add(3 * time.Second)
	for b.metric(t, "icehub_turn_offloaded_packets_total", nil) < float64(b.offload().Total()) ||
		b.metric(t, "icehub_turn_relayed_packets_total", map[string]string{"direction": "to_client"}) < float64(sent) {
		if time.Now().After(deadline) {
			t.Fatalf("metrics: offloaded %v (kernel %d), relayed to_client %v (uclient got %d)",
				b.metric(t, "icehub_turn_offloaded_packets_total", nil), b.offload().Total(),
				b.metric(t, "icehub_turn_relayed_packets_total", map[string]string{"direction": "to_client"}), sent)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
