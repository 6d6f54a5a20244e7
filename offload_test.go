//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"icehub/auth"
	"icehub/internal/echopeer"
	"icehub/internal/metrictest"
	"icehub/internal/testenv"
	"icehub/internal/vethbed"
)

// TestXDPOffloadBinary runs the icehub binary with turn.offload = "xdp" in the relay
// namespace of a vethbed (clients on 198.51.100.0/24, peers on 203.0.113.0/24) and checks
// what an operator would: the log says the offload is on, pion's client and coturn's
// turnutils_uclient relay through it, icehub_turn_offloaded_packets_total rises on
// /metrics, and a reload (SIGHUP) that denies the peer stops the relaying. The turnserver
// package's TestOffloadXDP covers the offload's life cycle in detail.
func TestXDPOffloadBinary(t *testing.T) {
	testenv.Netns(t)
	uclient := testenv.Tool(t, "turnutils_uclient", "coturn")
	peerTool := testenv.Tool(t, "turnutils_peer", "coturn")
	bed, err := vethbed.New(vethbed.Options{Prefix: "ihbin-", Clients: 2, Peers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bed.Close() })
	if err := bed.AttachPass(); err != nil { // see vethbed.AttachPass: veth needs it, NICs do not
		t.Fatal(err)
	}
	const secret, admin = "offload-secret-0123", 19641
	listen := netip.AddrPortFrom(vethbed.RelayClientSide, 3478)
	cfg := fmt.Sprintf(`[turn]
listen = "%s"
relay_ip = "%s"
relay_ports = "40000-40999"
allow_peers = ["203.0.113.0/24"]
offload = "xdp"
[auth]
secrets = [%q]
[signal]
listen = "127.0.0.1:18080"
[admin]
listen = "127.0.0.1:%d"
`, listen, vethbed.RelayPeerSide, secret, admin)
	p := startIcehubOpts(t, opts{config: cfg, wrapper: []string{"ip", "netns", "exec", bed.Relay}})
	p.admin = admin
	p.waitLog(t, "turn xdp offload on", time.Second)
	metrics := func() map[string]float64 { return scrapeIn(t, bed, admin) }

	// pion's client, echoing off a UDP peer, until the kernel relays (the peer's next hop
	// resolves a moment after user space relayed the first packets).
	peer := echoPeerIn(t, bed, bed.PeerIPs[0])
	r := allocateIn(t, bed, listen, mint(t, secret, "pion", time.Hour))
	deadline := time.Now().Add(15 * time.Second)
	for metrics()["icehub_turn_offloaded_packets_total"] == 0 {
		if err := r.echo(peer, []byte("through the kernel")); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("icehub_turn_offloaded_packets_total stays 0:\n%s", p.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// coturn's client, against coturn's echo peer on the same (resolved) peer address.
	ctx, cancel := context.WithCancel(context.Background())
	peerCmd := exec.CommandContext(ctx, "ip", "netns", "exec", bed.Peer, peerTool, "-p", "3480", "-L", bed.PeerIPs[0].String())
	if err := peerCmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = peerCmd.Wait() })
	time.Sleep(300 * time.Millisecond)
	before := metrics()["icehub_turn_offloaded_packets_total"]
	ucx, ucancel := context.WithTimeout(context.Background(), time.Minute)
	defer ucancel()
	out, err := exec.CommandContext(ucx, "ip", "netns", "exec", bed.Client, uclient, "-W", secret, "-u", "uclient",
		"-n", "100", "-m", "2", "-l", "160", "-e", bed.PeerIPs[0].String(), "-r", "3480", "-p", "3478",
		listen.Addr().String()).CombinedOutput()
	if err != nil {
		t.Fatalf("turnutils_uclient: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`).FindAllStringSubmatch(string(out), -1)
	if len(m) == 0 || m[len(m)-1][1] == "0" || m[len(m)-1][1] != m[len(m)-1][2] {
		t.Fatalf("turnutils_uclient lost packets:\n%s", out)
	}
	echoed, _ := strconv.Atoi(m[len(m)-1][2])
	// The offload's counters reach /metrics every 2 s.
	deadline = time.Now().Add(10 * time.Second)
	for {
		rose := metrics()["icehub_turn_offloaded_packets_total"] - before
		if rose >= float64(echoed) {
			time.Sleep(2500 * time.Millisecond) // one more sync, for the log
			t.Logf("turnutils_uclient: %d echoes (%d relayed datagrams), offloaded packets +%v",
				echoed, 2*echoed, metrics()["icehub_turn_offloaded_packets_total"]-before)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("icehub_turn_offloaded_packets_total rose by %v for uclient's %d echoes (each crosses twice)", rose, echoed)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A reload that denies the peer: nothing more reaches it.
	conf, _ := os.ReadFile(p.cfg)
	conf = bytes.Replace(conf, []byte("[auth]"), []byte(fmt.Sprintf("deny_peers = [\"%s/32\"]\n[auth]", bed.PeerIPs[0])), 1)
	if err := os.WriteFile(p.cfg, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "reloaded", 5*time.Second)
	if err := r.echo(peer, []byte("denied now")); err == nil {
		t.Fatal("the peer a reload denied still echoes")
	}
	// Changing the offload itself takes a restart.
	_ = os.WriteFile(p.cfg, bytes.Replace(conf, []byte(`offload = "xdp"`), []byte(`offload = "off"`), 1), 0o600)
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "turn.offload or turn.offload_interfaces changed: restart to apply", 5*time.Second)
}

// scrapeIn reads /metrics of an icehub whose admin listener is in the relay namespace.
func scrapeIn(t *testing.T, bed *vethbed.Bed, port int) map[string]float64 {
	t.Helper()
	m, err := metrictest.Scrape(bed.HTTPClient(bed.Relay), fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// echoPeerIn is a UDP echo peer on ip in the bed's peer namespace.
func echoPeerIn(t *testing.T, bed *vethbed.Bed, ip netip.Addr) *net.UDPAddr {
	t.Helper()
	var c *net.UDPConn
	if err := bed.Do(bed.Peer, func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return echopeer.Serve(t, c).Addr
}

// allocateIn is allocate from the bed's first client address, in the client namespace.
func allocateIn(t *testing.T, bed *vethbed.Bed, server netip.AddrPort, cr auth.Credentials) *relay {
	t.Helper()
	var sock net.PacketConn
	if err := bed.Do(bed.Client, func() (err error) {
		sock, err = net.ListenPacket("udp4", netip.AddrPortFrom(bed.ClientIPs[0], 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server.String(), TURNServerAddr: server.String(), Conn: sock,
		Username: cr.Username, Password: cr.Password, RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); sock.Close() })
	conn, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &relay{client: c, conn: conn}
}

// TestXDPOffloadPrivileges runs the binary as an unprivileged user in the relay namespace:
// without capabilities it says in one line why the offload is off and serves anyway; with
// exactly the three that deploy/icehub-xdp.conf grants (CAP_BPF, CAP_NET_ADMIN,
// CAP_PERFMON) the offload loads and attaches.
func TestXDPOffloadPrivileges(t *testing.T) {
	testenv.Netns(t)
	setpriv := testenv.Tool(t, "setpriv", "util-linux")
	bed, err := vethbed.New(vethbed.Options{Prefix: "ihcap-", Clients: 1, Peers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bed.Close() })
	// The test binary's directories are root's; nobody needs a readable copy and config.
	dir, err := os.MkdirTemp("", "icehub-caps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin, _ := os.ReadFile(binPath)
	if err := os.WriteFile(dir+"/icehub", bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`[turn]
listen = "%s:3478"
relay_ip = "%s"
offload = "xdp"
[auth]
secrets = ["caps-secret-0123"]
[signal]
listen = "127.0.0.1:18080"
[admin]
listen = "127.0.0.1:19641"
`, vethbed.RelayClientSide, vethbed.RelayPeerSide)
	if err := os.WriteFile(dir+"/server.toml", []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(caps string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", bed.Relay, setpriv,
			"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"+caps, "--ambient-caps=-all"+caps,
			"--bounding-set=-all"+caps, dir+"/icehub", "-config", dir+"/server.toml")
		var out testenv.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(out.String(), "icehub ready") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if !strings.Contains(out.String(), "icehub ready") {
			t.Fatalf("icehub with caps %q did not start:\n%s", caps, out.String())
		}
		return out.String()
	}
	none := run("")
	if n := strings.Count(none, "turn xdp offload"); n != 1 || !regexp.MustCompile(`turn xdp offload off; relaying in user space.*needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON`).MatchString(none) {
		t.Fatalf("without capabilities: want one line naming the capabilities the offload needs:\n%s", none)
	}
	// CAP_BPF and CAP_NET_ADMIN load and attach programs, but the verifier accepts this
	// one's packet pointer arithmetic only with CAP_PERFMON.
	two := run(",+bpf,+net_admin")
	if n := strings.Count(two, "turn xdp offload"); n != 1 || !regexp.MustCompile(`turn xdp offload off; .*without CAP_PERFMON`).MatchString(two) {
		t.Fatalf("with CAP_BPF and CAP_NET_ADMIN only: want one line naming CAP_PERFMON:\n%s", two)
	}
	if got := run(",+bpf,+net_admin,+perfmon"); !strings.Contains(got, "turn xdp offload on") {
		t.Fatalf("with the drop-in's capabilities the offload did not load:\n%s", got)
	}
}
