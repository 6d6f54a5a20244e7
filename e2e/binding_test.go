//go:build linux

package e2e

import (
	"testing"
)

// TestNATBinding (case 1): turnutils_stunclient behind each NAT gets that NAT's public
// address from icehub, on a public address and behind a 1:1 NAT; the TCP-443-only firewall
// lets no STUN over UDP through; turnutils_natdiscovery, against a reference RFC 5780 server,
// classifies each NAT as the lab built it.
func TestNATBinding(t *testing.T) {
	coturnTools(t)
	w := newWorld(t)
	for _, name := range []string{"public", "nat"} {
		startHub(t, w.servers[name], hubOpts{})
	}
	startRefSTUN(t, w)

	for _, c := range []string{"cone", "sym", "tcp443"} {
		for _, s := range []string{"public", "nat"} {
			cl, srv := w.clients[c], w.servers[s]
			t.Run(c+"→"+s, func(t *testing.T) {
				mapped, out := stunClient(t, cl.host, srv.public, 3478)
				if c == "tcp443" {
					if mapped != "" {
						t.Fatalf("STUN over UDP crossed the TCP-443-only firewall: %s\n%s", mapped, out)
					}
					t.Logf("case 1 | %-6s → %-6s | stunclient: no answer (UDP blocked, as built)", c, s)
					return
				}
				if hostOf(mapped) != cl.public {
					t.Fatalf("reflexive address %q, want the NAT's public address %s\n%s", mapped, cl.public, out)
				}
				t.Logf("case 1 | %-6s → %-6s | stunclient: reflexive %s (the NAT's public address)", c, s, mapped)
			})
		}
	}
	if w.ipv6 {
		t.Run("cone→public-ipv6", func(t *testing.T) {
			cl := w.clients["cone"]
			mapped, out := stunClient(t, cl.host, w.servers["public"].public6, 3478)
			if hostOf(mapped) != cl.public6 {
				t.Fatalf("reflexive address %q, want the NAT66's public address %s\n%s", mapped, cl.public6, out)
			}
			t.Logf("case 1 | cone/v6 → public | stunclient: reflexive %s (NAT66)", mapped)
		})
	}

	for _, c := range []struct {
		site               *site
		mapping, filtering string
	}{
		{w.clients["cone"], "Endpoint Independent", "Address and Port Dependent"},
		{w.clients["sym"], "Address and Port Dependent", "Address and Port Dependent"},
		{w.clients["tcp443"], "", ""},
		{w.servers["nat"], "Endpoint Independent", "Endpoint Independent"},
	} {
		t.Run("natdiscovery/"+c.site.name, func(t *testing.T) {
			mapping, filtering, out := natDiscovery(t, c.site.host)
			if mapping != c.mapping || filtering != c.filtering {
				t.Fatalf("natdiscovery: mapping %q filtering %q, want %q and %q\n%s", mapping, filtering, c.mapping, c.filtering, out)
			}
			if mapping == "" {
				t.Logf("case 1 | natdiscovery %-6s | no answer (UDP blocked, as built)", c.site.name)
				return
			}
			t.Logf("case 1 | natdiscovery %-6s | %s mapping, %s filtering", c.site.name, mapping, filtering)
		})
	}
}
