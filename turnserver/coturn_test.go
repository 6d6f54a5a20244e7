package turnserver

import (
	"context"
	"icehub/internal/testenv"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// coturnTool returns the path of a coturn test client; missing tools fail the test (the
// project runs everything, nothing is skipped).
func coturnTool(t *testing.T, name string) string {
	t.Helper()
	return testenv.Tool(t, name, "coturn")
}

func runTool(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, coturnTool(t, name), args...).CombinedOutput()
	return string(out), err
}

// freeUDPPort returns a UDP port that was free a moment ago, for tools that need a fixed port.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// startPeer runs turnutils_peer as a UDP echo peer on 127.0.0.1.
func startPeer(t *testing.T) int {
	t.Helper()
	port := freeUDPPort(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out strings.Builder
	cmd := exec.CommandContext(ctx, coturnTool(t, "turnutils_peer"), "-p", strconv.Itoa(port), "-L", "127.0.0.1")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	// Wait until the peer echoes, so the client does not race its start.
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !waitEcho(c, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, 10*time.Second) {
		cancel()
		_ = cmd.Wait() // its output is complete
		t.Fatalf("turnutils_peer on port %d does not echo:\n%s", port, out.String())
	}
	return port
}

// waitEcho sends probes from c to an echo peer at dst until one comes back from it, for at
// most within, and reports whether one did.
func waitEcho(c net.PacketConn, dst *net.UDPAddr, within time.Duration) bool {
	buf := make([]byte, 64)
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		_, _ = c.WriteTo([]byte("ping"), dst)
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			if string(buf[:n]) == "ping" && from.String() == dst.String() {
				_ = c.SetReadDeadline(time.Time{})
				return true
			}
		}
	}
	return false
}

var lostRe = regexp.MustCompile(`Total lost packets (\d+) \(([0-9.]+)%\)`)
var sentRe = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)

// checkNoLoss asserts uclient relayed everything it sent.
func checkNoLoss(t *testing.T, out string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("turnutils_uclient: %v\n%s", err, out)
	}
	m := lostRe.FindStringSubmatch(out)
	s := sentRe.FindAllStringSubmatch(out, -1)
	if m == nil || len(s) == 0 {
		t.Fatalf("no loss summary in output:\n%s", out)
	}
	last := s[len(s)-1]
	if m[1] != "0" || last[1] == "0" || last[1] != last[2] {
		t.Fatalf("lost %s packets, sent %s received %s:\n%s", m[1], last[1], last[2], out)
	}
}

func TestCoturnStunclient(t *testing.T) {
	ts := startServer(t, nil)
	port := strings.TrimPrefix(ts.udp, "127.0.0.1:")
	out, err := runTool(t, testTimeout, "turnutils_stunclient", "-p", port, "127.0.0.1")
	if err != nil {
		t.Fatalf("turnutils_stunclient: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`reflexive addr: 127\.0\.0\.1:\d+`).MatchString(out) {
		t.Fatalf("no mapped address in output:\n%s", out)
	}
}

func TestCoturnUclient(t *testing.T) {
	ts := startServer(t, func(c *Config) { loopbackAllowed(c); c.UDPSockets = 4 })
	port := strings.TrimPrefix(ts.udp, "127.0.0.1:")
	peer := strconv.Itoa(startPeer(t))
	base := []string{"-W", testSecret1, "-u", "user", "-n", "20", "-m", "2", "-l", "100", "-p", port}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"udp to echo peer", []string{"-e", "127.0.0.1", "-r", peer}},
		{"tcp to echo peer", []string{"-t", "-e", "127.0.0.1", "-r", peer}},
		{"rotated secret", []string{"-e", "127.0.0.1", "-r", peer, "-W", testSecret2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append(append(append([]string{}, base...), c.args...), "127.0.0.1")
			out, err := runTool(t, 30*time.Second, "turnutils_uclient", args...)
			checkNoLoss(t, out, err)
		})
	}
}

func TestCoturnClientToClientDefaultFilter(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.UDPSockets = 4 }) // default peer filter
	port := strings.TrimPrefix(ts.udp, "127.0.0.1:")
	for _, tr := range [][]string{nil, {"-t"}} {
		args := append([]string{"-y", "-W", testSecret1, "-u", "user", "-n", "20", "-m", "2", "-l", "100", "-p", port}, tr...)
		out, err := runTool(t, 30*time.Second, "turnutils_uclient", append(args, "127.0.0.1")...)
		checkNoLoss(t, out, err)
	}
}

func TestCoturnEchoPeerRefusedByDefault(t *testing.T) {
	ts := startServer(t, nil) // default filter: 127.0.0.1 peers refused
	port := strings.TrimPrefix(ts.udp, "127.0.0.1:")
	peer := strconv.Itoa(startPeer(t))
	out, err := runTool(t, 30*time.Second, "turnutils_uclient", "-W", testSecret1, "-u", "user",
		"-n", "3", "-m", "1", "-l", "100", "-p", port, "-e", "127.0.0.1", "-r", peer, "127.0.0.1")
	// 127.0.0.1 carries the relay itself, so the permission (per IP) is granted, but the
	// server drops every packet to a loopback port that is not a relay: nothing comes back.
	s := sentRe.FindAllStringSubmatch(out, -1)
	if err != nil || len(s) == 0 {
		t.Fatalf("turnutils_uclient: %v\n%s", err, out)
	}
	if last := s[len(s)-1]; last[1] == "0" || last[2] != "0" {
		t.Fatalf("sent %s, received %s: the loopback echo peer must be unreachable:\n%s", last[1], last[2], out)
	}
}
