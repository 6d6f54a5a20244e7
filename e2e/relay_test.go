//go:build linux

package e2e

import (
	"strconv"
	"strings"
	"testing"
)

// uclientMessages keeps each relay run short: 50 messages at uclient's 20 ms pace.
const uclientMessages = 50

// transport is one way a client reaches the TURN server.
type transport struct {
	name string
	args []string // uclient flags before -p
	port int
}

var (
	overUDP = transport{"udp", nil, 3478}
	overTCP = transport{"tcp", []string{"-t"}, 3478}
	overTLS = transport{"tls-443", []string{"-t", "-S"}, 443}
)

// TestNATRelays (case 2): turnutils_uclient relays to an echo peer on the Internet with no
// loss from behind each NAT, over UDP, TCP and TLS on the port HTTPS shares (only TLS on 443
// from behind the TCP-443-only firewall), to icehub on a public address and behind a 1:1 NAT
// with turn.public_ip; every relayed address it is given is the server's public address.
func TestNATRelays(t *testing.T) {
	coturnTools(t)
	w := newWorld(t)
	for _, name := range []string{"public", "nat"} {
		startHub(t, w.servers[name], hubOpts{})
	}
	startPeer(t, w)

	for _, c := range []string{"cone", "sym", "tcp443"} {
		ways := []transport{overUDP, overTCP, overTLS}
		if c == "tcp443" {
			ways = []transport{overTLS}
		}
		for _, s := range []string{"public", "nat"} {
			for _, tr := range ways {
				cl, srv := w.clients[c], w.servers[s]
				t.Run(c+"→"+s+"/"+tr.name, func(t *testing.T) {
					args := append(append([]string{}, tr.args...), "-e", peerIP, "-r", strconv.Itoa(peerPort), "-p", strconv.Itoa(tr.port), srv.public)
					r := uclient(t, cl.host, uclientMessages, args...)
					checkRelayRun(t, r, srv.public)
					t.Logf("case 2 | %-6s → %-6s %-7s | sent %d, received %d, lost %s | relayed %s", c, s, tr.name, r.sent, r.recv, r.lost, strings.Join(r.relays, " "))
				})
			}
		}
	}
	if w.ipv6 {
		for _, tr := range []transport{overUDP, overTCP} {
			t.Run("cone→public-ipv6/"+tr.name, func(t *testing.T) {
				srv := w.servers["public"]
				args := append(append([]string{}, tr.args...), "-x", "-e", peerIP6, "-r", strconv.Itoa(peerPort), "-p", strconv.Itoa(tr.port), srv.public6)
				r := uclient(t, w.clients["cone"].host, uclientMessages, args...)
				checkRelayRun(t, r, srv.public6)
				t.Logf("case 2 | cone/v6 → public %-7s | sent %d, received %d, lost %s | relayed %s", tr.name, r.sent, r.recv, r.lost, strings.Join(r.relays, " "))
			})
		}
	}
}

// checkRelayRun fails unless the run lost nothing and every relayed address is public.
func checkRelayRun(t *testing.T, r uclientResult, public string) {
	t.Helper()
	if !r.noLoss() {
		t.Fatalf("sent %d, received %d, lost %q (%v):\n%s", r.sent, r.recv, r.lost, r.err, r.out)
	}
	if len(r.relays) == 0 {
		t.Fatalf("no relayed address in the output:\n%s", r.out)
	}
	for _, a := range r.relays {
		if hostOf(a) != public {
			t.Fatalf("relayed address %s, want the server's public address %s:\n%s", a, public, r.out)
		}
	}
}
