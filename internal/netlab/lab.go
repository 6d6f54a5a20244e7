//go:build linux

// Package netlab builds small Internets out of Linux network namespaces for tests that need
// real NATs: an "Internet" namespace holding one bridge, hosts and routers attached to it by
// veth pairs, private LANs behind the routers, and NAT or firewall rules (nft) in the routers.
//
// Everything the lab makes lives inside namespaces it created: the veth pairs are created
// inside them and never touch the root namespace, which gets no interface, address or route,
// so no packet can leave the lab. Only documentation addresses are accepted (192.0.2.0/24,
// 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32). Close removes it all; Sweep removes what a
// crashed run left behind, recognised by the name prefix "ihnat-" and a dead owner process.
//
// Needs root, iproute2 (`ip`) and nftables (`nft`).
package netlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Prefix starts the name of every namespace a lab makes, followed by the owner's pid, so
// Sweep can tell a crashed run's leftovers from a live lab and from anything else.
const Prefix = "ihnat-"

// labSeq numbers the labs of one process so sequential (or parallel) tests never share names.
var labSeq atomic.Int64

// Lab is one set of namespaces; Close removes them.
type Lab struct {
	name string // Prefix + pid + "-" + seq + "-"

	mu     sync.Mutex
	nss    []*NS
	inet   *NS
	bridge string
	closed bool
}

// New sweeps leftovers of crashed runs, then creates the Internet namespace with its bridge.
// Hosts and routers are added with Host and Router.
func New(ctx context.Context) (*Lab, error) {
	if _, err := Sweep(ctx); err != nil {
		return nil, err
	}
	l := &Lab{name: fmt.Sprintf("%s%d-%d-", Prefix, os.Getpid(), labSeq.Add(1)), bridge: "br0"}
	inet, err := l.newNS(ctx, "inet")
	if err != nil {
		_ = l.Close()
		return nil, err
	}
	l.inet = inet
	if err := inet.IP(ctx, "link", "add", l.bridge, "type", "bridge"); err != nil {
		_ = l.Close()
		return nil, err
	}
	if err := inet.IP(ctx, "link", "set", l.bridge, "up"); err != nil {
		_ = l.Close()
		return nil, err
	}
	if err := plainBridges(inet); err != nil {
		_ = l.Close()
		return nil, err
	}
	return l, nil
}

// Internet is the namespace holding the public bridge; services "on the Internet" (echo
// peers, reference STUN servers) run here once it has addresses (see AddAddrs).
func (l *Lab) Internet() *NS { return l.inet }

// Namespaces lists the lab's namespaces in creation order.
func (l *Lab) Namespaces() []*NS {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*NS(nil), l.nss...)
}

// shortName is what a namespace's name inside a lab may be: what Sweep recognises.
var shortName = regexp.MustCompile(`^[a-z0-9-]+$`)

// newNS creates namespace l.name+short with its loopback up.
func (l *Lab) newNS(ctx context.Context, short string) (*NS, error) {
	if !shortName.MatchString(short) {
		return nil, fmt.Errorf("netlab: namespace name %q: use a-z, 0-9 and -", short)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("netlab: lab closed")
	}
	for _, n := range l.nss {
		if n.Short == short {
			l.mu.Unlock()
			return nil, fmt.Errorf("netlab: namespace %q exists", short)
		}
	}
	n := &NS{Name: l.name + short, Short: short}
	l.nss = append(l.nss, n)
	l.mu.Unlock()
	if err := ipCmd(ctx, "netns", "add", n.Name); err != nil {
		return nil, err
	}
	// No duplicate address detection in a network where no duplicate can exist. With it, every
	// interface's IPv6 link-local address is "tentative" for a second after the link comes up,
	// and its promotion is an address change: a browser started in the lab meanwhile (Chromium
	// watches netlink) fails its page loads with ERR_NETWORK_CHANGED. Set before any interface
	// exists, so that every one of them inherits it.
	if HasIPv6() {
		for _, key := range []string{"net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"} {
			if err := n.Sysctl(key, "0"); err != nil {
				return nil, err
			}
		}
	}
	if err := n.IP(ctx, "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return n, nil
}

// Close kills every process still running in the lab's namespaces and deletes them, which
// removes their interfaces, addresses, routes and rules with them. Safe to call twice.
func (l *Lab) Close() error {
	l.mu.Lock()
	nss := l.nss
	l.nss, l.closed = nil, true
	l.mu.Unlock()
	var errs []error
	for i := len(nss) - 1; i >= 0; i-- {
		if err := deleteNS(nss[i].Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteNS kills what runs inside namespace name (only processes in a lab namespace, which
// the lab's user started) and deletes it. A namespace that is already gone is no error.
func deleteNS(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 20 {
		out, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output()
		if err != nil || len(strings.TrimSpace(string(out))) == 0 {
			break
		}
		for _, f := range strings.Fields(string(out)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "del", name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ipCmd runs `ip args...` in the root namespace: only `ip netns add/del/pids/list` are ever
// run there; everything else goes through NS.IP.
func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
