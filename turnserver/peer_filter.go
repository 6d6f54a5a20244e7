package turnserver

import "net/netip"

// namedPrefix is one default-denied range and the name refusals are counted under.
type namedPrefix struct {
	name   string
	prefix netip.Prefix
}

// defaultDeny lists the ranges a TURN relay must not reach unless the operator opens them:
// everything in IANA's IPv4 and IPv6 special-purpose address registries (checked against
// both on 2026-12-01: RFC 6890 and its updates through RFC 9602 SRv6 SIDs and RFC 9780's
// dummy prefix), so the relay cannot be used as a proxy into the host's own networks
// (loopback services, cloud metadata at 169.254.169.254, LANs). 64:ff9b::/96 (NAT64) and
// 2002::/16 (6to4) are judged by the IPv4 address they carry instead.
// More specific entries come first so a refusal is counted under the most telling name.
var defaultDeny = func() []namedPrefix {
	raw := []struct{ name, cidr string }{
		{"broadcast", "255.255.255.255/32"},
		{"this-network", "0.0.0.0/8"},
		{"private", "10.0.0.0/8"},
		{"cgnat", "100.64.0.0/10"},
		{"loopback", "127.0.0.0/8"},
		{"link-local", "169.254.0.0/16"},
		{"private", "172.16.0.0/12"},
		{"ietf-protocol", "192.0.0.0/24"},
		{"documentation", "192.0.2.0/24"},
		{"as112", "192.31.196.0/24"},
		{"amt", "192.52.193.0/24"},
		{"6to4-relay", "192.88.99.0/24"},
		{"private", "192.168.0.0/16"},
		{"as112", "192.175.48.0/24"},
		{"benchmarking", "198.18.0.0/15"},
		{"documentation", "198.51.100.0/24"},
		{"documentation", "203.0.113.0/24"},
		{"multicast", "224.0.0.0/4"},
		{"reserved", "240.0.0.0/4"},
		{"unspecified", "::/128"},
		{"loopback", "::1/128"},
		{"ipv4-compatible", "::/96"},
		{"siit", "::ffff:0:0:0/96"},
		{"nat64-local", "64:ff9b:1::/48"},
		{"discard", "100::/64"},
		{"dummy", "100:0:0:1::/64"},
		{"ietf-protocol", "2001::/23"},
		{"documentation", "2001:db8::/32"},
		{"as112", "2620:4f:8000::/48"},
		{"documentation", "3fff::/20"},
		{"srv6-sid", "5f00::/16"},
		{"unique-local", "fc00::/7"},
		{"link-local", "fe80::/10"},
		{"site-local", "fec0::/10"},
		{"multicast", "ff00::/8"},
	}
	out := make([]namedPrefix, len(raw))
	for i, r := range raw {
		out[i] = namedPrefix{r.name, netip.MustParsePrefix(r.cidr)}
	}
	return out
}()

// denyPeersRange names refusals by the operator's deny_peers list.
const denyPeersRange = "deny_peers"

var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

// PeerFilter decides which peer addresses clients may relay to: deny_peers first, then
// allow_peers, then the special-purpose defaults. It is immutable; Reload builds a new one.
type PeerFilter struct {
	allow []netip.Prefix
	deny  []netip.Prefix
}

// NewPeerFilter returns a filter that opens allow (unless also in deny) on top of the
// safe defaults and closes deny in addition to them.
func NewPeerFilter(allow, deny []netip.Prefix) *PeerFilter {
	f := &PeerFilter{}
	for _, p := range allow {
		f.allow = append(f.allow, unmapPrefix(p))
	}
	for _, p := range deny {
		f.deny = append(f.deny, unmapPrefix(p))
	}
	return f
}

// Allowed reports whether a client may create a permission, channel or connection to ip.
func (f *PeerFilter) Allowed(ip netip.Addr) bool {
	ok, _ := f.Check(ip)
	return ok
}

// Check is Allowed plus, for a refusal, the name of the range that refused it
// (denyPeersRange for the operator's list), for logs and metrics.
func (f *PeerFilter) Check(ip netip.Addr) (ok bool, rangeName string) {
	if !ip.IsValid() {
		return false, "invalid"
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range f.deny {
		if p.Contains(ip) {
			return false, denyPeersRange
		}
	}
	for _, p := range f.allow {
		if p.Contains(ip) {
			return true, ""
		}
	}
	// Translation prefixes carry an IPv4 address the packet will finally reach, so
	// they are judged by that address.
	if v4, ok := embeddedV4(ip); ok {
		ok, name := f.Check(v4)
		if !ok && name != denyPeersRange {
			if nat64Prefix.Contains(ip) {
				name = "nat64-" + name
			} else {
				name = "6to4-" + name
			}
		}
		return ok, name
	}
	for _, np := range defaultDeny {
		if np.prefix.Contains(ip) {
			return false, np.name
		}
	}
	return true, ""
}

// embeddedV4 extracts the IPv4 address inside a NAT64 (RFC 6052 well-known prefix) or a
// 6to4 (RFC 3056) address.
func embeddedV4(ip netip.Addr) (netip.Addr, bool) {
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	switch {
	case nat64Prefix.Contains(ip):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	}
	return netip.Addr{}, false
}

// unmapPrefix turns ::ffff:a.b.c.d/n (n >= 96) into a.b.c.d/(n-96) so operator lists written
// either way match the unmapped addresses Check compares.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	a := p.Addr()
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}
