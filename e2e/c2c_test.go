//go:build linux

package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

// TestNATClientToClient (case 3): turnutils_uclient -y, two allocations on one server
// sending to each other's relayed address as advertised, loses nothing — on a public
// address, behind a 1:1 NAT with a hairpin rule, and behind one without. The relayed
// addresses are public_ip:port; icehub hands datagrams for its own relay addresses over
// inside the process (issue 12), so none may reach the NAT. Before that, they went out to
// public_ip and a NAT without hairpin dropped every one: on failure the test says how many
// datagrams stopped at the NAT.
func TestNATClientToClient(t *testing.T) {
	coturnTools(t)
	w := newWorld(t)
	for _, name := range serverNames {
		startHub(t, w.servers[name], hubOpts{})
	}
	for _, run := range []struct {
		client string
		tr     transport
	}{{"cone", overUDP}, {"cone", overTCP}, {"sym", overUDP}} {
		for _, s := range serverNames {
			cl, srv := w.clients[run.client], w.servers[s]
			t.Run(run.client+"→"+s+"/"+run.tr.name, func(t *testing.T) {
				var before int
				if srv.router != nil {
					before, _ = srv.router.Unturned(context.Background())
				}
				args := append(append([]string{}, run.tr.args...), "-y", "-p", "3478", srv.public)
				r := uclient(t, cl.host, uclientMessages, args...)
				t.Logf("case 3 | %-4s → %-11s %-3s | sent %d, received %d, lost %s | relayed %s", run.client, s, run.tr.name, r.sent, r.recv, r.lost, strings.Join(r.relays, " "))
				if !r.noLoss() {
					why := ""
					if srv.router != nil {
						after, _ := srv.router.Unturned(context.Background())
						why = "; " + strconv.Itoa(after-before) + " datagrams from the server to its own public address " + srv.public +
							" stopped at the NAT, which does not hairpin: relayed data for the server's own relay addresses must be delivered inside the process (issue 12)"
					}
					t.Fatalf("client to client: sent %d, received %d, lost %q%s\n%s", r.sent, r.recv, r.lost, why, r.out)
				}
				if srv.router != nil {
					if after, _ := srv.router.Unturned(context.Background()); after != before {
						t.Fatalf("%d datagrams from the server to its own public address %s reached the NAT: own relays must be served inside the process", after-before, srv.public)
					}
				}
				for _, a := range r.relays {
					if hostOf(a) != srv.public {
						t.Fatalf("relayed address %s, want the server's public address %s", a, srv.public)
					}
				}
			})
		}
	}
}
