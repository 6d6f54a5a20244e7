//go:build linux

package netlab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// Interface names. Each lives inside its own namespace, so the same names repeat harmlessly.
const (
	pubIf  = "pub"  // a host's or router's side of its link to the Internet bridge
	lanIf  = "lan"  // a router's LAN bridge
	hostIf = "eth0" // a LAN host's link to its router
)

// AddInternetAddrs puts addresses on the Internet bridge itself, for services that stand
// "on the Internet" in the lab (echo peers, reference STUN servers).
func (l *Lab) AddInternetAddrs(ctx context.Context, addrs ...string) error {
	ps, err := parsePrefixes(addrs)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if err := l.inet.IP(ctx, addrArgs(p, l.bridge)...); err != nil {
			return err
		}
	}
	return nil
}

// Host creates a namespace wired to the Internet bridge with public addresses, e.g.
// Host(ctx, "srv", "203.0.113.2/24", "2001:db8:1::2/64"). The Internet is one flat segment,
// so a public host needs no route.
func (l *Lab) Host(ctx context.Context, short string, addrs ...string) (*NS, error) {
	ps, err := parsePrefixes(addrs)
	if err != nil {
		return nil, err
	}
	n, err := l.newNS(ctx, short)
	if err != nil {
		return nil, err
	}
	if err := l.attach(ctx, n, ps); err != nil {
		return nil, err
	}
	return n, nil
}

// attach makes a veth pair inside the Internet namespace, moves one end into n as "pub"
// with the addresses and enslaves the other to the bridge. Created inside a lab namespace,
// neither end ever exists in the root namespace.
func (l *Lab) attach(ctx context.Context, n *NS, ps []netip.Prefix) error {
	outer := "p-" + n.Short
	if len(outer) > 15 {
		return fmt.Errorf("netlab: name %q too long for an interface", n.Short)
	}
	steps := [][]string{
		{"link", "add", outer, "type", "veth", "peer", "name", pubIf, "netns", n.Name},
		{"link", "set", outer, "master", l.bridge},
		{"link", "set", outer, "up"},
	}
	for _, s := range steps {
		if err := l.inet.IP(ctx, s...); err != nil {
			return err
		}
	}
	for _, p := range ps {
		if err := n.IP(ctx, addrArgs(p, pubIf)...); err != nil {
			return err
		}
	}
	return n.IP(ctx, "link", "set", pubIf, "up")
}

// Router is a namespace between the Internet bridge ("pub") and a LAN bridge ("lan") that
// forwards between them; SetNAT, OneToOne and Hairpin give it its NAT behaviour.
type Router struct {
	*NS
	Public []netip.Prefix // its addresses on the Internet
	LAN    []netip.Prefix // its addresses on the LAN, the LAN hosts' gateways
	lab    *Lab
	nhosts int
}

// Router creates a router with public addresses on the Internet and LAN addresses (one per
// family, the LAN's prefix and the gateway address), e.g.
// Router(ctx, "cone", []string{"203.0.113.21/24"}, []string{"192.0.2.1/28"}).
// It forwards without NAT until SetNAT or OneToOne is called.
func (l *Lab) Router(ctx context.Context, short string, public, lan []string) (*Router, error) {
	pub, err := parsePrefixes(public)
	if err != nil {
		return nil, err
	}
	lanPs, err := parsePrefixes(lan)
	if err != nil {
		return nil, err
	}
	n, err := l.newNS(ctx, short)
	if err != nil {
		return nil, err
	}
	if err := l.attach(ctx, n, pub); err != nil {
		return nil, err
	}
	if err := n.IP(ctx, "link", "add", lanIf, "type", "bridge"); err != nil {
		return nil, err
	}
	for _, p := range lanPs {
		if err := n.IP(ctx, addrArgs(p, lanIf)...); err != nil {
			return nil, err
		}
	}
	if err := n.IP(ctx, "link", "set", lanIf, "up"); err != nil {
		return nil, err
	}
	if err := plainBridges(n); err != nil {
		return nil, err
	}
	sysctls := [][2]string{
		{"net.ipv4.ip_forward", "1"},
		// A hairpinned packet leaves by the interface it came in on; no ICMP redirect for it.
		{"net.ipv4.conf.all.send_redirects", "0"},
		{"net.ipv4.conf." + lanIf + ".send_redirects", "0"},
	}
	if HasIPv6() {
		sysctls = append(sysctls, [2]string{"net.ipv6.conf.all.forwarding", "1"})
	}
	for _, s := range sysctls {
		if err := n.Sysctl(s[0], s[1]); err != nil {
			return nil, err
		}
	}
	return &Router{NS: n, Public: pub, LAN: lanPs, lab: l}, nil
}

// Host creates a namespace on the router's LAN with the given addresses (inside the LAN
// prefixes) and a default route through the router for each family it has.
func (r *Router) Host(ctx context.Context, short string, addrs ...string) (*NS, error) {
	ps, err := parsePrefixes(addrs)
	if err != nil {
		return nil, err
	}
	n, err := r.lab.newNS(ctx, short)
	if err != nil {
		return nil, err
	}
	r.nhosts++
	outer := fmt.Sprintf("h%d", r.nhosts)
	steps := [][]string{
		{"link", "add", outer, "type", "veth", "peer", "name", hostIf, "netns", n.Name},
		{"link", "set", outer, "master", lanIf},
		{"link", "set", outer, "up"},
	}
	for _, s := range steps {
		if err := r.IP(ctx, s...); err != nil {
			return nil, err
		}
	}
	for _, p := range ps {
		if err := n.IP(ctx, addrArgs(p, hostIf)...); err != nil {
			return nil, err
		}
	}
	if err := n.IP(ctx, "link", "set", hostIf, "up"); err != nil {
		return nil, err
	}
	for _, gw := range r.LAN {
		fam := "-4"
		if gw.Addr().Is6() {
			fam = "-6"
		}
		for _, p := range ps {
			if p.Addr().Is6() == gw.Addr().Is6() {
				if err := n.IP(ctx, fam, "route", "add", "default", "via", gw.Addr().String()); err != nil {
					return nil, err
				}
				break
			}
		}
	}
	return n, nil
}

// plainBridges keeps a namespace's bridges out of netfilter. Where br_netfilter is loaded
// (Docker loads it), bridged frames run through the IP hooks and a DNAT back into the bridge
// a frame came from is then forwarded at layer 2, where the bridge drops it: hairpin would
// never work. The switch is per namespace (Linux 5.3+); without br_netfilter there is none.
func plainBridges(n *NS) error {
	for _, fam := range []string{"iptables", "ip6tables", "arptables"} {
		key := "net.bridge.bridge-nf-call-" + fam
		if _, err := os.Stat("/proc/sys/" + strings.ReplaceAll(key, ".", "/")); err != nil {
			continue
		}
		if err := n.Sysctl(key, "0"); err != nil {
			return err
		}
	}
	return nil
}
