//go:build linux

package netlab

import (
	"fmt"
	"net/netip"
	"os"
)

// Documentation lists the only ranges a lab will put on an interface (RFC 5737, RFC 3849):
// they are never routed on the Internet, so even a mistake cannot send a packet to a real host.
var Documentation = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// parsePrefixes parses interface addresses ("203.0.113.2/24", "2001:db8:1::2/64") and
// refuses any whose network is not inside a documentation range.
func parsePrefixes(addrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return nil, fmt.Errorf("netlab: address %q: %v", a, err)
		}
		if !isDocumentation(p) {
			return nil, fmt.Errorf("netlab: %s is outside the documentation ranges %v", p, Documentation)
		}
		out = append(out, p)
	}
	return out, nil
}

func isDocumentation(p netip.Prefix) bool {
	for _, d := range Documentation {
		if d.Bits() <= p.Bits() && d.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// HasIPv6 reports whether the kernel has IPv6 (a kernel booted with ipv6.disable=1 has no
// /proc/sys/net/ipv6); labs then build IPv4 only.
func HasIPv6() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

// addrArgs adds p to dev: IPv6 addresses skip duplicate address detection, which would keep
// them unusable ("tentative") for a second or two in a network where no duplicate can exist
// (the lab's namespaces turn it off for every address too: see newNS).
func addrArgs(p netip.Prefix, dev string) []string {
	args := []string{"addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	return args
}
