//go:build linux

// Package vethbed builds the relay testbed of network namespaces joined by veth pairs that
// the XDP offload's tests and bench use:
//
//	client ns  c0 198.51.100.2…/24 ─── veth ─── rc 198.51.100.1/24  relay ns
//	              2001:db8:c::2/64                2001:db8:c::1/64
//	peer ns    p0 203.0.113.2…/24  ─── veth ─── rp 203.0.113.1/24  relay ns
//	              2001:db8:e::2/64                2001:db8:e::1/64
//
// Documentation addresses only, no routes beyond the two links, nothing outside the
// namespaces it creates, and Close (which tests register with t.Cleanup) deletes them,
// and with them the veth pairs. It drives iproute2's `ip`; the caller checks for it and
// for root (testenv.Netns).
package vethbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Fixed addresses of the bed.
var (
	RelayClientSide = netip.MustParseAddr("198.51.100.1") // the TURN listen address
	RelayPeerSide   = netip.MustParseAddr("203.0.113.1")  // the relay addresses
	// IPv6 twins (2001:db8::/32, documentation), on the same links.
	RelayClientSide6 = netip.MustParseAddr("2001:db8:c::1")
	RelayPeerSide6   = netip.MustParseAddr("2001:db8:e::1")
)

// Options shape a bed.
type Options struct {
	// Prefix starts every namespace name; it must be unique to the caller (e.g. "ihxdp-").
	Prefix string
	// Clients and Peers are how many addresses the client and peer namespaces carry
	// (198.51.100.2 on, 203.0.113.2 on); at least 1, at most 200.
	Clients, Peers int
}

// Bed is a built testbed.
type Bed struct {
	Client, Relay, Peer string // namespace names
	// Interface names: the client's and peer's ends, and the relay's two ends.
	ClientIf, PeerIf, RelayClientIf, RelayPeerIf string
	ClientIPs, PeerIPs                           []netip.Addr
	ClientIP6, PeerIP6                           netip.Addr // the first client's and peer's
	closers                                      []func() error
}

var seq atomic.Uint32

// New creates the namespaces and links. On error nothing is left behind.
func New(o Options) (*Bed, error) {
	if o.Prefix == "" || len(o.Prefix) > 12 {
		return nil, errors.New("vethbed: prefix must be 1-12 characters")
	}
	o.Clients, o.Peers = clamp(o.Clients), clamp(o.Peers)
	id := fmt.Sprintf("%d-%d", os.Getpid(), seq.Add(1))
	b := &Bed{
		Client: o.Prefix + id + "-c", Relay: o.Prefix + id + "-r", Peer: o.Prefix + id + "-p",
		// Interface names live inside the namespaces, so they need not be unique.
		ClientIf: "c0", PeerIf: "p0", RelayClientIf: "rc", RelayPeerIf: "rp",
	}
	for i := 0; i < o.Clients; i++ {
		b.ClientIPs = append(b.ClientIPs, netip.AddrFrom4([4]byte{198, 51, 100, byte(2 + i)}))
	}
	for i := 0; i < o.Peers; i++ {
		b.PeerIPs = append(b.PeerIPs, netip.AddrFrom4([4]byte{203, 0, 113, byte(2 + i)}))
	}
	cmds := [][]string{
		{"netns", "add", b.Client}, {"netns", "add", b.Relay}, {"netns", "add", b.Peer},
		{"-n", b.Relay, "link", "add", b.RelayClientIf, "type", "veth", "peer", "name", b.ClientIf, "netns", b.Client},
		{"-n", b.Relay, "link", "add", b.RelayPeerIf, "type", "veth", "peer", "name", b.PeerIf, "netns", b.Peer},
		{"-n", b.Relay, "addr", "add", RelayClientSide.String() + "/24", "dev", b.RelayClientIf},
		{"-n", b.Relay, "addr", "add", RelayPeerSide.String() + "/24", "dev", b.RelayPeerIf},
	}
	// nodad: the addresses are usable at once instead of after duplicate detection.
	b.ClientIP6, b.PeerIP6 = netip.MustParseAddr("2001:db8:c::2"), netip.MustParseAddr("2001:db8:e::2")
	cmds = append(cmds,
		[]string{"-n", b.Relay, "addr", "add", RelayClientSide6.String() + "/64", "dev", b.RelayClientIf, "nodad"},
		[]string{"-n", b.Relay, "addr", "add", RelayPeerSide6.String() + "/64", "dev", b.RelayPeerIf, "nodad"},
		[]string{"-n", b.Client, "addr", "add", b.ClientIP6.String() + "/64", "dev", b.ClientIf, "nodad"},
		[]string{"-n", b.Peer, "addr", "add", b.PeerIP6.String() + "/64", "dev", b.PeerIf, "nodad"})
	for _, ip := range b.ClientIPs {
		cmds = append(cmds, []string{"-n", b.Client, "addr", "add", ip.String() + "/24", "dev", b.ClientIf})
	}
	for _, ip := range b.PeerIPs {
		cmds = append(cmds, []string{"-n", b.Peer, "addr", "add", ip.String() + "/24", "dev", b.PeerIf})
	}
	for _, l := range []struct{ ns, dev string }{
		{b.Client, "lo"}, {b.Client, b.ClientIf}, {b.Relay, "lo"}, {b.Relay, b.RelayClientIf},
		{b.Relay, b.RelayPeerIf}, {b.Peer, "lo"}, {b.Peer, b.PeerIf},
	} {
		cmds = append(cmds, []string{"-n", l.ns, "link", "set", l.dev, "up"})
	}
	for _, c := range cmds {
		if err := ip(c...); err != nil {
			b.Close()
			return nil, err
		}
	}
	// Real NICs hand the relay fully checksummed frames; a local socket sending over veth
	// leaves the UDP checksum for "hardware" to finish (CHECKSUM_PARTIAL), which XDP cannot
	// see and would relay half-done. Turning TX checksum offload off on the far ends makes
	// the senders in this bed behave like remote hosts.
	for _, e := range []struct{ ns, dev string }{{b.Client, b.ClientIf}, {b.Peer, b.PeerIf}} {
		if err := b.Do(e.ns, func() error { return setTxChecksum(e.dev, false) }); err != nil {
			b.Close()
			return nil, fmt.Errorf("vethbed: %s: tx checksum off: %w", e.dev, err)
		}
	}
	return b, nil
}

func clamp(n int) int { return min(max(n, 1), 200) }

// Close deletes the namespaces (and so the veth pairs). Safe to call twice.
func (b *Bed) Close() error {
	var errs []error
	for i := len(b.closers) - 1; i >= 0; i-- {
		errs = append(errs, b.closers[i]())
	}
	b.closers = nil
	for _, ns := range []string{b.Client, b.Relay, b.Peer} {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			errs = append(errs, ip("netns", "del", ns))
		}
	}
	return errors.Join(errs...)
}

// Do runs fn on an OS thread switched into namespace ns. Sockets fn opens stay in ns for
// their lifetime, whatever thread later uses them. The thread is restored before it goes
// back to the Go scheduler, or discarded if that fails.
func (b *Bed) Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, err) // thread stays locked and dies with this goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// HTTPClient is an HTTP client whose connections are made from inside namespace ns (the
// admin listener of a server in the bed is only reachable there), one per request, so that
// nothing idles afterwards.
func (b *Bed) HTTPClient(ns string) *http.Client {
	dial := func(_ context.Context, network, addr string) (c net.Conn, err error) {
		err = b.Do(ns, func() (err error) {
			c, err = net.DialTimeout(network, addr, 2*time.Second)
			return err
		})
		return c, err
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: 5 * time.Second}
}

// Command returns cmd argv run inside namespace ns (`ip netns exec`).
func (b *Bed) Command(ns string, argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
}

// IP runs `ip -n ns args...`.
func (b *Bed) IP(ns string, args ...string) error { return ip(append([]string{"-n", ns}, args...)...) }

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
