//go:build linux

package turnserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"

	"icehub/internal/metrictest"
	"icehub/internal/testenv"
	"icehub/internal/vethbed"
	"icehub/turnserver/internal/xdprelay"
)

// The offload's tests run the server in-process, inside the relay namespace of a vethbed
// (clients on 198.51.100.0/24, peers on 203.0.113.0/24). A Go process cannot move itself
// into a namespace: setns changes one thread, and the server opens relay sockets later on
// whatever thread pion's goroutines run. So the test re-runs itself with `ip netns exec` in
// the relay namespace (the whole child process lives there), and the child opens client and
// peer sockets on threads switched into their namespaces (vethbed.Bed.Do). The parent owns
// the bed and removes it when the child is done, failed or not.

// offloadBedEnv carries the bed, as JSON, from the parent test to the child.
const offloadBedEnv = "ICEHUB_TEST_OFFLOAD_BED"

// inRelayNamespace returns the bed when this process is the child; in the parent it builds
// the bed, runs the calling test in the child, reports the child's output and verdict, and
// returns nil (the caller returns at once).
func inRelayNamespace(t *testing.T) *vethbed.Bed {
	t.Helper()
	if js := os.Getenv(offloadBedEnv); js != "" {
		var bed vethbed.Bed
		if err := json.Unmarshal([]byte(js), &bed); err != nil {
			t.Fatalf("%s: %v", offloadBedEnv, err)
		}
		return &bed
	}
	testenv.Netns(t)
	bed, err := vethbed.New(vethbed.Options{Prefix: "ihts-", Clients: 3, Peers: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bed.Close() })
	// The far ends stand for remote hosts; on veth they need an XDP program of their own to
	// be handed what the relay's program sends (see vethbed.AttachPass).
	if err := bed.AttachPass(); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(bed)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	args := []string{"netns", "exec", bed.Relay, os.Args[0], "-test.run=^" + t.Name() + "$", "-test.count=1", "-test.v"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Env = append(os.Environ(), offloadBedEnv+"="+string(js))
	out, err := cmd.CombinedOutput()
	t.Logf("in namespace %s:\n%s", bed.Relay, out)
	if err != nil {
		t.Fatalf("the test failed in the relay namespace: %v", err)
	}
	if m := regexp.MustCompile(`(?m)^--- SKIP: ` + regexp.QuoteMeta(t.Name()) + `\b`).Find(out); m != nil {
		t.Skip("skipped in the relay namespace (see above)")
	}
	return nil
}

// Addresses the bed's server uses: the listen address on the client side, relays on the
// peer side.
var (
	bedListen = netip.AddrPortFrom(vethbed.RelayClientSide, 3478)
	bedPeers  = mustPrefix("203.0.113.0/24")
)

// bedServer is a server in the relay namespace with the offload on, its metrics registry
// and its log.
type bedServer struct {
	*testServer
	bed *vethbed.Bed
	reg *prometheus.Registry
	log *logBuffer
}

func (b *bedServer) offload() *xdprelay.Offload { return b.srv.offload.off }

// startBedServer starts a server listening on 198.51.100.1:3478, relaying from 203.0.113.1
// to peers in 203.0.113.0/24, with the XDP offload; mod adjusts the config.
func startBedServer(t *testing.T, bed *vethbed.Bed, mod func(*Config)) *bedServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	lb := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", lb.String())
		}
	})
	ts := newTestServer(t, func(c *Config) {
		c.Listen = []netip.AddrPort{bedListen}
		c.RelayIP = vethbed.RelayPeerSide
		c.Offload = OffloadXDP
		c.offloadSync = 50 * time.Millisecond
		c.Settings.AllowPeers = []netip.Prefix{bedPeers}
		c.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if mod != nil {
			mod(c)
		}
	}, slog.LevelInfo, reg)
	if ts.srv.offload == nil {
		t.Fatalf("the offload did not open:\n%s", lb.String())
	}
	return &bedServer{testServer: ts, bed: bed, reg: reg, log: lb}
}

// client returns a pion client on client address i of the bed, logged in as user.
func (b *bedServer) client(t *testing.T, i int, user string) *turn.Client {
	t.Helper()
	var conn net.PacketConn
	do(t, b.bed, b.bed.Client, func() (err error) {
		conn, err = net.ListenPacket("udp4", netip.AddrPortFrom(b.bed.ClientIPs[i], 0).String())
		return err
	})
	cr := b.creds(t, user)
	return startClient(t, conn, bedListen.String(), cr.Username, cr.Password, 0)
}

// peer opens a UDP socket on peer address i of the bed.
func (b *bedServer) peer(t *testing.T, i int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	do(t, b.bed, b.bed.Peer, func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.bed.PeerIPs[i], 0)))
		return err
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func do(t *testing.T, bed *vethbed.Bed, ns string, fn func() error) {
	t.Helper()
	if err := bed.Do(ns, fn); err != nil {
		t.Fatal(err)
	}
}

// bindings is what the kernel holds now.
func (b *bedServer) bindings() []xdprelay.Binding { return b.offload().Bindings() }

// waitBindings waits until the kernel holds n bindings.
func (b *bedServer) waitBindings(t *testing.T, n int, why string) []xdprelay.Binding {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		bs := b.bindings()
		if len(bs) == n {
			return bs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the kernel holds %d bindings, want %d: %v", why, len(bs), n, bs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric reads a series of the server's registry.
func (b *bedServer) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	return metrictest.Value(t, b.reg, name, labels)
}

// relayData sends data from the client's relay conn to peer and reads it at peer; then
// back. It fails unless both arrive byte for byte from the right addresses.
func relayData(t *testing.T, relay net.PacketConn, peer *net.UDPConn, data []byte) {
	t.Helper()
	if _, err := relay.WriteTo(data, peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	got, from, ok := recvUDP(peer, 2*time.Second)
	if !ok || !bytes.Equal(got, data) || from.String() != relay.LocalAddr().String() {
		t.Fatalf("peer got %d bytes from %v (ok %v), want %d bytes from %v", len(got), from, ok, len(data), relay.LocalAddr())
	}
	if _, err := peer.WriteTo(data, relay.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	_ = relay.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, src, err := relay.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:n], data) || src.String() != peer.LocalAddr().String() {
		t.Fatalf("client got %d bytes from %v (err %v), want %d bytes from %v", n, src, err, len(data), peer.LocalAddr())
	}
}

// recvUDP reads one datagram, waiting at most d.
func recvUDP(c *net.UDPConn, d time.Duration) ([]byte, net.Addr, bool) {
	buf := make([]byte, 70000)
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		return nil, nil, false
	}
	return buf[:n], from, true
}

// offloaded sends probes both ways until the kernel relays them (the next hops resolve a
// moment after the first packets went through user space), and returns the kernel's total.
func (b *bedServer) offloaded(t *testing.T, relay net.PacketConn, peer *net.UDPConn) uint64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		before := b.offload().Total()
		relayData(t, relay, peer, []byte("probe"))
		if after := b.offload().Total(); after-before == 2 {
			return after
		}
		if time.Now().After(deadline) {
			v, _ := b.offload().Verdicts()
			t.Fatalf("the kernel does not relay the channel both ways; verdicts %v", v)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// udpCsumErrors is Udp InCsumErrors of namespace ns: datagrams its kernel dropped for a bad
// checksum.
func udpCsumErrors(t *testing.T, bed *vethbed.Bed, ns string) (n uint64) {
	t.Helper()
	do(t, bed, ns, func() error {
		f, err := os.Open("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		var names []string
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 2 || fields[0] != "Udp:" {
				continue
			}
			if names == nil {
				names = fields
				continue
			}
			for i, name := range names {
				if name == "InCsumErrors" && i < len(fields) {
					n, err = strconv.ParseUint(fields[i], 10, 64)
					return err
				}
			}
		}
		return errors.New("no Udp InCsumErrors")
	})
	return n
}

// warmNeighbours makes the relay namespace resolve the bed's first client and peer
// addresses, as earlier traffic would have: the offload relays only to resolved next hops.
func warmNeighbours(t *testing.T, bed *vethbed.Bed) {
	t.Helper()
	for _, ip := range []netip.Addr{bed.ClientIPs[0], bed.PeerIPs[0]} {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 9)))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("warm"))
		_ = c.Close()
	}
	time.Sleep(1500 * time.Millisecond) // the offload re-reads neighbours every second
}
