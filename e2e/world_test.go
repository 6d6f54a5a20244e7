//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"icehub/internal/netlab"
	"icehub/internal/testenv"
)

// The lab's Internet is one segment, 203.0.113.0/24 and 2001:db8:1::/64. Behind the NATs,
// LANs use 198.51.100.0/24 (servers) and 192.0.2.0/24 (clients), one /28 each.
//
//	Internet namespace   203.0.113.10 echo peer (turnutils_peer), 2001:db8:1::10
//	                     203.0.113.11, .12 reference RFC 5780 STUN server (coturn)
//	public server        203.0.113.2, 2001:db8:1::2: icehub on a public address
//	nat server           203.0.113.3 ⇄ 198.51.100.2 (1:1 NAT, no hairpin)
//	nat-hairpin server   203.0.113.4 ⇄ 198.51.100.18 (1:1 NAT with a hairpin rule)
//	cone, cone2          203.0.113.21, .22: masquerade (endpoint-independent mapping);
//	                     cone also NAT66 2001:db8:1::21 for 2001:db8:21::2
//	sym, sym2            203.0.113.23, .24: masquerade --random-fully (symmetric)
//	tcp443               203.0.113.25: cone NAT behind a firewall passing only TCP to 443
const (
	peerIP     = "203.0.113.10"
	peerIP6    = "2001:db8:1::10"
	peerPort   = 3480
	refSTUN    = "203.0.113.11"
	refSTUNAlt = "203.0.113.12"
)

// site is one place a program runs: a public host, or a host behind its own router.
type site struct {
	name    string
	host    *netlab.NS
	router  *netlab.Router // nil for a public host
	kind    netlab.NAT     // for client routers
	private string         // the host's own IPv4 address
	public  string         // the IPv4 address the Internet sees it as
	ip6     string         // the host's own IPv6 address, if any
	public6 string         // the IPv6 address the Internet sees, if any
}

// world is the whole lab: the Internet namespace, the server sites and the client sites.
type world struct {
	lab     *netlab.Lab
	inet    *netlab.NS
	servers map[string]*site
	clients map[string]*site
	ipv6    bool
}

// Names of the sites, for tables and subtest names.
var (
	serverNames = []string{"public", "nat", "nat-hairpin"}
	clientNames = []string{"cone", "cone2", "sym", "sym2", "tcp443"}
)

// newWorld checks this machine can build the lab (skipping with what to install otherwise),
// then builds it; t.Cleanup removes it, failure included.
func newWorld(t *testing.T) *world {
	t.Helper()
	testenv.Long(t)
	testenv.Netns(t)
	testenv.Tool(t, "nft", "nftables")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lab, err := netlab.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("removing the lab: %v", err)
		}
	})
	w := &world{lab: lab, inet: lab.Internet(), servers: map[string]*site{}, clients: map[string]*site{}, ipv6: netlab.HasIPv6()}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	inet := []string{peerIP + "/24", refSTUN + "/24", refSTUNAlt + "/24"}
	if w.ipv6 {
		inet = append(inet, peerIP6+"/64")
	}
	must(lab.AddInternetAddrs(ctx, inet...))

	pubAddrs := []string{"203.0.113.2/24"}
	if w.ipv6 {
		pubAddrs = append(pubAddrs, "2001:db8:1::2/64")
	}
	h, err := lab.Host(ctx, "public", pubAddrs...)
	must(err)
	w.servers["public"] = &site{name: "public", host: h, private: "203.0.113.2", public: "203.0.113.2"}
	if w.ipv6 {
		w.servers["public"].ip6, w.servers["public"].public6 = "2001:db8:1::2", "2001:db8:1::2"
	}

	for i, name := range []string{"nat", "nat-hairpin"} {
		pub, priv := fmt.Sprintf("203.0.113.%d", 3+i), fmt.Sprintf("198.51.100.%d", 16*i+2)
		r, err := lab.Router(ctx, name, []string{pub + "/24"}, []string{fmt.Sprintf("198.51.100.%d/28", 16*i+1)})
		must(err)
		must(r.OneToOne(ctx, netip.MustParseAddr(pub), netip.MustParseAddr(priv)))
		if name == "nat-hairpin" {
			must(r.Hairpin(ctx, netip.MustParseAddr(pub), netip.MustParseAddr(priv), true))
		}
		h, err := r.Host(ctx, name+"-h", priv+"/28")
		must(err)
		w.servers[name] = &site{name: name, host: h, router: r, private: priv, public: pub}
	}

	kinds := map[string]netlab.NAT{"cone": netlab.Cone, "cone2": netlab.Cone, "sym": netlab.Symmetric, "sym2": netlab.Symmetric, "tcp443": netlab.TCP443Only}
	for i, name := range clientNames {
		pub, priv := fmt.Sprintf("203.0.113.%d", 21+i), fmt.Sprintf("192.0.2.%d", 16*i+2)
		pubs, lans, hosts := []string{pub + "/24"}, []string{fmt.Sprintf("192.0.2.%d/28", 16*i+1)}, []string{priv + "/28"}
		s := &site{name: name, kind: kinds[name], private: priv, public: pub}
		if name == "cone" && w.ipv6 {
			pubs, lans, hosts = append(pubs, "2001:db8:1::21/64"), append(lans, "2001:db8:21::1/64"), append(hosts, "2001:db8:21::2/64")
			s.ip6, s.public6 = "2001:db8:21::2", "2001:db8:1::21"
		}
		r, err := lab.Router(ctx, name, pubs, lans)
		must(err)
		must(r.SetNAT(ctx, s.kind))
		s.router = r
		s.host, err = r.Host(ctx, name+"-h", hosts...)
		must(err)
		w.clients[name] = s
	}
	return w
}
