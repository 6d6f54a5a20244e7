//go:build linux

package e2e

import (
	"context"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"icehub/internal/netlab"
	"icehub/internal/testenv"
)

// coturnTools skips under -short, and unless coturn's programs are installed.
func coturnTools(t *testing.T) {
	t.Helper()
	testenv.Long(t)
	for _, tool := range []string{"turnutils_uclient", "turnutils_peer", "turnutils_stunclient", "turnutils_natdiscovery", "turnserver"} {
		testenv.Tool(t, tool, "coturn")
	}
}

// startDaemon runs a long-lived program in ns until the test ends.
func startDaemon(t *testing.T, ns *netlab.NS, name string, args ...string) {
	t.Helper()
	cmd := ns.Command(context.Background(), name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = netlab.KillGroup(cmd)
		<-done
		if t.Failed() {
			t.Logf("%s in %s:\n%s", name, ns.Short, out.String())
		}
	})
}

// startPeer runs turnutils_peer, the UDP echo peer, on the Internet (IPv4 and IPv6).
func startPeer(t *testing.T, w *world) {
	t.Helper()
	ips := []string{peerIP}
	if w.ipv6 {
		ips = append(ips, peerIP6)
	}
	for _, ip := range ips {
		startDaemon(t, w.inet, "turnutils_peer", "-L", ip, "-p", strconv.Itoa(peerPort))
		waitUDP(t, w.inet, net.JoinHostPort(ip, strconv.Itoa(peerPort)), []byte("ping"))
	}
}

// startRefSTUN runs coturn as a STUN-only server on two addresses: with two, it answers RFC
// 5780's CHANGE-REQUEST, which turnutils_natdiscovery needs to classify a NAT. (icehub does
// not implement RFC 5780; a TURN server need not.)
func startRefSTUN(t *testing.T, w *world) {
	t.Helper()
	dir := t.TempDir()
	startDaemon(t, w.inet, "turnserver", "-n", "--stun-only", "-L", refSTUN, "-L", refSTUNAlt,
		"--listening-port", "3478", "--no-cli", "--no-tls", "--no-dtls", "--log-file", "stdout",
		"--simple-log", "--db", filepath.Join(dir, "turndb"), "--pidfile", filepath.Join(dir, "pid"))
	msg := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	waitUDP(t, w.inet, net.JoinHostPort(refSTUN, "3478"), msg.Raw)
	waitUDP(t, w.inet, net.JoinHostPort(refSTUNAlt, "3478"), msg.Raw)
}

// waitUDP sends probe to addr from ns until something answers.
func waitUDP(t *testing.T, ns *netlab.NS, addr string, probe []byte) {
	t.Helper()
	c, err := ns.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for range 100 {
		_, _ = c.WriteTo(probe, ua)
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := c.ReadFrom(buf); err == nil {
			return
		}
	}
	t.Fatalf("nothing answers on %s", addr)
}

// runTool runs a coturn tool in ns with a deadline and returns its output (stdout and stderr).
func runTool(t *testing.T, ns *netlab.NS, within time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := ns.Command(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return string(out), err
}

var reflexiveRe = regexp.MustCompile(`UDP reflexive addr: (\S+)`)

// stunClient runs turnutils_stunclient from ns against server:port and returns the reflexive
// (mapped) address it reports, "" when it got no answer within 5 s (it answers in
// milliseconds in the lab; it would retry for ever).
func stunClient(t *testing.T, ns *netlab.NS, server string, port int) (mapped, out string) {
	t.Helper()
	out, _ = runTool(t, ns, 5*time.Second, "turnutils_stunclient", "-p", strconv.Itoa(port), server)
	if m := reflexiveRe.FindStringSubmatch(out); m != nil {
		return m[1], out
	}
	return "", out
}

var (
	mappingRe   = regexp.MustCompile(`NAT with (.+) Mapping!`)
	filteringRe = regexp.MustCompile(`NAT with (.+) Filtering!`)
)

// natDiscovery runs turnutils_natdiscovery -m -f against the reference server and returns
// the mapping and filtering behaviour it names ("Endpoint Independent", "Address and Port
// Dependent", ...), "" where it named none.
func natDiscovery(t *testing.T, ns *netlab.NS) (mapping, filtering, out string) {
	t.Helper()
	out, _ = runTool(t, ns, 60*time.Second, "turnutils_natdiscovery", "-m", "-f", refSTUN)
	if m := mappingRe.FindStringSubmatch(out); m != nil {
		mapping = m[1]
	}
	if m := filteringRe.FindStringSubmatch(out); m != nil {
		filtering = m[1]
	}
	return mapping, filtering, out
}

// uclientResult is what one turnutils_uclient run reported.
type uclientResult struct {
	out        string
	sent, recv int
	lost       string   // "0 (0.000000%)"
	relays     []string // "Received relay addr" lines: the XOR-RELAYED-ADDRESSes
	err        error
}

func (r uclientResult) noLoss() bool {
	return r.sent > 0 && r.sent == r.recv && strings.HasPrefix(r.lost, "0 ")
}

var (
	totalsRe = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	lostRe   = regexp.MustCompile(`Total lost packets (\d+ \([0-9.]+%\))`)
	relayRe  = regexp.MustCompile(`Received relay addr: (\S+)`)
)

// uclient runs turnutils_uclient -v from ns with the lab's secret, a short run (messages of
// 120 bytes, one client) and the given arguments; the server address goes last.
func uclient(t *testing.T, ns *netlab.NS, messages int, args ...string) uclientResult {
	t.Helper()
	base := []string{"-v", "-W", labSecret, "-u", "natlab", "-n", strconv.Itoa(messages), "-m", "1", "-l", "120"}
	out, err := runTool(t, ns, 90*time.Second, "turnutils_uclient", append(base, args...)...)
	r := uclientResult{out: out, err: err}
	if all := totalsRe.FindAllStringSubmatch(out, -1); len(all) > 0 {
		last := all[len(all)-1]
		r.sent, _ = strconv.Atoi(last[1])
		r.recv, _ = strconv.Atoi(last[2])
	}
	if m := lostRe.FindStringSubmatch(out); m != nil {
		r.lost = m[1]
	}
	for _, m := range relayRe.FindAllStringSubmatch(out, -1) {
		r.relays = append(r.relays, m[1])
	}
	return r
}

// hostOf returns the address part of "ip:port", "[ip6]:port" or coturn's "ip6:port".
func hostOf(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	if i := strings.LastIndexByte(hostport, ':'); i > 0 {
		return hostport[:i]
	}
	return hostport
}
