//go:build linux

package netlab

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
)

// NAT is how a router maps its LAN onto its public address (RFC 4787's terms).
type NAT int

const (
	// Cone masquerades with Linux's default port choice: a LAN socket keeps one public port
	// whatever it talks to (endpoint-independent mapping); replies are filtered per peer
	// address and port. What most home routers do.
	Cone NAT = iota
	// Symmetric masquerades with a random public port for every new flow (--random-fully):
	// address-and-port-dependent mapping, so a server-reflexive candidate is useless to a peer.
	Symmetric
	// TCP443Only is Cone behind a firewall that forwards nothing out but TCP to port 443 (and
	// the replies): the corporate network where only HTTPS gets through.
	TCP443Only
)

func (k NAT) String() string {
	switch k {
	case Cone:
		return "cone"
	case Symmetric:
		return "symmetric"
	case TCP443Only:
		return "tcp443-only"
	}
	return fmt.Sprintf("NAT(%d)", int(k))
}

// Rule tables: the NAT lives in table "ihnat", the hairpin in "ihnat_hairpin" so it can be
// added and removed on its own.
const (
	natTable     = "ihnat"
	hairpinTable = "ihnat_hairpin"
)

// SetNAT makes the router masquerade its LAN behind its public addresses (IPv4, and IPv6
// where the LAN has it: NAT66 behaves the same) the way kind says.
func (r *Router) SetNAT(ctx context.Context, kind NAT) error {
	masq := "masquerade"
	if kind == Symmetric {
		masq = "masquerade fully-random"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", natTable)
	fmt.Fprintf(&b, "  chain nat_post {\n    type nat hook postrouting priority srcnat; policy accept;\n")
	fmt.Fprintf(&b, "    oifname %q %s\n  }\n", pubIf, masq)
	// Unsolicited packets to the router itself are dropped before conntrack confirms an
	// entry for them. Otherwise the entry a peer's first hole-punching packet leaves behind
	// would hold the very tuple the LAN host's answer maps onto, and the NAT would move that
	// answer to another port: endpoint-independent mapping broken by its own firewall.
	fmt.Fprintf(&b, "  chain filter_in {\n    type filter hook input priority filter; policy accept;\n")
	fmt.Fprintf(&b, "    iifname %q ct state new drop\n  }\n", pubIf)
	if kind == TCP443Only {
		fmt.Fprintf(&b, "  chain filter_fwd {\n    type filter hook forward priority filter; policy drop;\n")
		fmt.Fprintf(&b, "    ct state established,related accept\n")
		fmt.Fprintf(&b, "    iifname %q oifname %q tcp dport 443 accept\n  }\n", lanIf, pubIf)
	}
	b.WriteString("}\n")
	return r.replaceTable(ctx, "inet", natTable, b.String())
}

// OneToOne maps public to private both ways (a cloud VM's elastic IP): everything sent to
// public from the Internet goes to private, everything private sends out comes from public,
// ports unchanged. Without Hairpin, a packet the private host sends to public stops at the
// router (it is the router's own address there), as on most home routers and cloud NATs.
func (r *Router) OneToOne(ctx context.Context, public, private netip.Addr) error {
	fam, err := family(public, private)
	if err != nil {
		return err
	}
	rules := fmt.Sprintf(`table %[1]s %[2]s {
  chain nat_pre {
    type nat hook prerouting priority dstnat; policy accept;
    iifname %[3]q %[1]s daddr %[4]s dnat to %[5]s
  }
  chain nat_post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname %[3]q %[1]s saddr %[5]s snat to %[4]s
  }
  counter %[7]s {}
  chain filter_in {
    type filter hook input priority filter; policy accept;
    iifname %[6]q %[1]s daddr %[4]s counter name %[7]s
  }
}
`, fam, natTable, pubIf, public, private, lanIf, unturnedCounter)
	return r.replaceTable(ctx, fam, natTable, rules)
}

// unturnedCounter counts what the LAN sent to the public address and the router kept: packets
// a hairpin rule would have turned around.
const unturnedCounter = "lan_to_public"

// Unturned returns how many packets the LAN sent to the public address of a OneToOne router
// that ended at the router itself (no hairpin rule turned them around).
func (r *Router) Unturned(ctx context.Context) (int, error) {
	for _, fam := range []string{"ip", "ip6"} {
		out, err := r.Run(ctx, "nft", "list", "counter", fam, natTable, unturnedCounter)
		if err != nil {
			continue
		}
		var n int
		if i := strings.Index(out, "packets "); i >= 0 {
			if _, err := fmt.Sscan(out[i+len("packets "):], &n); err == nil {
				return n, nil
			}
		}
		return 0, fmt.Errorf("netlab: unreadable counter: %s", out)
	}
	return 0, fmt.Errorf("netlab: %s has no 1:1 NAT", r.Short)
}

// Hairpin adds (on) or removes the rule that turns a private host's packet to its own public
// address around at the router: sent back into the LAN to the private address, with the
// public address as its source, as if it had come from the Internet. NAT is decided on a
// flow's first packet: flows the router has already seen keep the treatment they got.
func (r *Router) Hairpin(ctx context.Context, public, private netip.Addr, on bool) error {
	fam, err := family(public, private)
	if err != nil {
		return err
	}
	if !on {
		return r.replaceTable(ctx, fam, hairpinTable, "")
	}
	rules := fmt.Sprintf(`table %[1]s %[2]s {
  chain nat_pre {
    type nat hook prerouting priority dstnat; policy accept;
    iifname %[3]q %[1]s daddr %[4]s dnat to %[5]s
  }
  chain nat_post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname %[3]q %[1]s saddr %[5]s %[1]s daddr %[5]s ct status dnat snat to %[4]s
  }
}
`, fam, hairpinTable, lanIf, public, private)
	return r.replaceTable(ctx, fam, hairpinTable, rules)
}

// replaceTable swaps table fam name for rules (none when empty) in one nft transaction.
func (r *Router) replaceTable(ctx context.Context, fam, name, rules string) error {
	// "add" first so "delete" cannot fail on a table that does not exist yet.
	script := fmt.Sprintf("add table %s %s\ndelete table %s %s\n%s", fam, name, fam, name, rules)
	return r.Nft(ctx, script)
}

func family(a, b netip.Addr) (string, error) {
	if a.Is4() != b.Is4() {
		return "", fmt.Errorf("netlab: %s and %s are of different families", a, b)
	}
	if a.Is4() {
		return "ip", nil
	}
	return "ip6", nil
}

// Ruleset returns the router's nft ruleset, for logs.
func (r *Router) Ruleset(ctx context.Context) string {
	out, _ := r.Run(ctx, "nft", "list", "ruleset")
	return out
}
