//go:build linux

package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"icehub/internal/metrictest"
	"icehub/internal/vethbed"
)

// `bench xdp` measures the kernel fast path (issue 16) in a testbed of network namespaces
// (internal/vethbed): the load generator's clients in one, the echo peer in another, the
// TURN server between them, so relayed packets cross real (virtual) interfaces where XDP
// runs. Servers alternate on identical loads:
//
//	coturn      coturn's turnserver
//	icehub      icehub, turn.offload = "off"
//	icehub-xdp  icehub, turn.offload = "xdp"
//	forward     no TURN server at all: the clients send straight to the echo peer and the
//	            relay namespace forwards (ip_forward); the ceiling of the generator, the
//	            echo peer and the veth links, which no relay on this machine can pass
//
// Figures: whole-machine CPU per relayed packet (from /proc/stat: kernel work such as
// softirq relaying belongs to no process) at a fixed rate, and the highest stepped echo
// rate with ≤ -max-loss loss; for icehub-xdp also the share of relayed packets the kernel
// relayed (from its /metrics). The machine's load next to them says how much to trust
// them: every other process on the machine is in the whole-machine figure.

type xdpServer struct {
	name string
	argv func(dir string) []string
}

func cmdXDP(args []string) error {
	fs := flag.NewFlagSet("xdp", flag.ContinueOnError)
	servers := fs.String("servers", "coturn,icehub,icehub-xdp,forward", "servers to alternate: coturn, icehub, icehub-xdp, forward (no relay: the testbed's ceiling)")
	icehubBin := fs.String("icehub", "", "prebuilt icehub binary for the icehub modes (default: go build the repository)")
	coturnBin := fs.String("coturn", "turnserver", "coturn's turnserver")
	sessions := fs.Int("sessions", 100, "TURN sessions, from 198.51.100.2 on (at most 200 addresses, then reused)")
	size := fs.Int("size", 160, "echo payload bytes")
	steps := fs.String("steps", "10k,20k,40k,60k,80k,100k,120k,150k,200k", "echo rates to step through until the first with loss over -max-loss")
	step := fs.Duration("step", 3*time.Second, "length of each rate step")
	cpuRate := fs.Int("cpu-rate", 30000, "echo rate for the CPU figure, pps")
	fixed := fs.Duration("fixed", 5*time.Second, "length of the CPU step")
	maxLoss := fs.Float64("max-loss", 0.01, "loss above which a step fails")
	rounds := fs.Int("rounds", 1, "repeat the alternation; CPU figures are the median round, the rate the best")
	out := fs.String("out", "", "also write the table, with date, machine and load, to this file (e.g. bench/RESULTS-xdp.md)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rates, err := parseRates(*steps)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("xdp mode needs root (network namespaces, XDP)")
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "icehub-bench-xdp-")
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "bench xdp: logs and binaries in", dir)
	bed, err := vethbed.New(vethbed.Options{Prefix: "ihxdpb-", Clients: min(*sessions, 200), Peers: 1})
	if err != nil {
		return err
	}
	defer bed.Close()
	if err := bed.AttachPass(); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		live.Lock()
		for p := range live.procs {
			p.stop()
		}
		live.Unlock()
		bed.Close()
		os.Exit(130)
	}()
	placeInBed(bed)

	listen := &net.UDPAddr{IP: vethbed.RelayClientSide.AsSlice(), Port: 3478}
	known := map[string]xdpServer{
		"coturn":     {"coturn", func(d string) []string { return coturnBedArgs(*coturnBin, d) }},
		"icehub":     {"icehub", func(d string) []string { return icehubBedArgs(d, dir, "off") }},
		"icehub-xdp": {"icehub-xdp", func(d string) []string { return icehubBedArgs(d, dir, "xdp") }},
		"forward":    {"forward", nil},
	}
	var order []xdpServer
	for _, name := range strings.Split(*servers, ",") {
		s, ok := known[strings.TrimSpace(name)]
		if !ok {
			return fmt.Errorf("unknown server %q", name)
		}
		order = append(order, s)
		switch {
		case strings.HasPrefix(s.name, "icehub") && *icehubBin == "":
			err = buildIcehub(root, filepath.Join(dir, "icehub"))
		case strings.HasPrefix(s.name, "icehub"):
			err = os.Symlink(*icehubBin, filepath.Join(dir, "icehub"))
		}
		if err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	all := map[string][]*xdpFigures{}
	load := startLoad()
	for round := 0; round < max(*rounds, 1); round++ {
		for _, s := range order {
			f, err := xdpMeasure(bed, s, dir, listen, *sessions, *size, *cpuRate, *fixed, *step, rates, *maxLoss)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			all[s.name] = append(all[s.name], f)
		}
	}
	var report strings.Builder
	printXDPTable(&report, order, all, *cpuRate, *size, *sessions)
	fmt.Fprintln(&report, load.end())
	fmt.Print(report.String())
	if *out != "" {
		return os.WriteFile(*out, []byte(resultsHeader(os.Args[1:])+report.String()), 0o644)
	}
	return nil
}

// placeInBed points the echo machinery's socket hooks into the namespaces.
func placeInBed(bed *vethbed.Bed) {
	listenEchoPeer = func() (c *net.UDPConn, err error) {
		err = bed.Do(bed.Peer, func() (err error) {
			c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: bed.PeerIPs[0].AsSlice()})
			return err
		})
		return c, err
	}
	sourceFor = func(i int) *net.UDPAddr { return &net.UDPAddr{IP: bed.ClientIPs[i%len(bed.ClientIPs)].AsSlice()} }
	dialUDP = func(local, server *net.UDPAddr) (c *net.UDPConn, err error) {
		err = bed.Do(bed.Client, func() (err error) {
			c, err = net.DialUDP("udp4", local, server)
			return err
		})
		return c, err
	}
}

type xdpFigures struct {
	cpuUS, procUS float64 // machine and server-process µs per relayed packet
	// relayUS is the machine's time minus the load generator's and echo peer's own (this
	// process): what relaying cost, user space and kernel, per relayed packet.
	relayUS   float64
	softirqUS float64 // machine-wide softirq µs per relayed packet (where XDP and veth run)
	maxRate   int
	top       bool    // the highest step passed: the real maximum is higher
	offloaded float64 // share of the relayed packets the kernel relayed, -1: not icehub-xdp
}

func xdpMeasure(bed *vethbed.Bed, s xdpServer, dir string, listen *net.UDPAddr, sessions, size, cpuRate int,
	fixed, step time.Duration, rates []int, maxLoss float64) (*xdpFigures, error) {
	direct := s.argv == nil
	pid := 0
	var p *proc
	if direct {
		undo, err := forwardThroughRelay(bed)
		if err != nil {
			return nil, err
		}
		defer undo()
	} else {
		argv := append([]string{"ip", "netns", "exec", bed.Relay}, s.argv(dir)...)
		ready := func() error { return bed.Do(bed.Client, stunReady(listen)) }
		var err error
		if p, err = start(dir, s.name, argv, dir, ready); err != nil {
			return nil, err
		}
		track(p)
		defer stopTracked(p)
		pid = p.pid()
		fmt.Fprintf(os.Stderr, "  %s pid %d\n", s.name, pid)
	}
	run, err := newEchoRun(listen, benchSecret, sessions, size, 2*time.Millisecond, direct)
	if err != nil {
		return nil, err
	}
	defer run.close(true)
	f := &xdpFigures{offloaded: -1}
	// CPU at a fixed rate first, on a quiet machine: whole-machine busy time over the
	// window divided by the packets relayed (peer received + echoed back).
	var m map[string]float64
	if !direct {
		m = icehubMetrics(bed, s)
	}
	peer0, m0, sirq0, proc := run.peer.recv.Load(), machineBusy(), softirqTime(), startCPU(pid)
	r := run.runStep(cpuRate, fixed, 300*time.Millisecond, 0)
	relayed := run.peer.recv.Load() - peer0 + r.recv
	if relayed > 0 {
		f.cpuUS = float64((machineBusy() - m0).Microseconds()) / float64(relayed)
		f.softirqUS = float64((softirqTime() - sirq0).Microseconds()) / float64(relayed)
		f.procUS = proc.perUnit(relayed)
	}
	if s.name == "icehub-xdp" {
		// The offload syncs its counters every 2 s: wait for one, then compare.
		time.Sleep(2500 * time.Millisecond)
		if m2 := icehubMetrics(bed, s); m2 != nil && m != nil {
			off := m2["icehub_turn_offloaded_packets_total"] - m["icehub_turn_offloaded_packets_total"]
			all := m2[`icehub_turn_relayed_packets_total{direction="to_peer"}`] + m2[`icehub_turn_relayed_packets_total{direction="to_client"}`] -
				m[`icehub_turn_relayed_packets_total{direction="to_peer"}`] - m[`icehub_turn_relayed_packets_total{direction="to_client"}`]
			if all > 0 {
				f.offloaded = off / all
			}
		}
		if f.offloaded <= 0 {
			return nil, fmt.Errorf("icehub-xdp relayed nothing in the kernel (is the offload on? see %s)", p.log)
		}
	}
	fmt.Fprintf(os.Stderr, "  %s @%d pps: %s; machine %.2f µs/relayed pkt%s\n", s.name, cpuRate, r, f.cpuUS, offloadedNote(f))
	for i, rate := range rates {
		r := run.runStep(rate, step, 300*time.Millisecond, 0)
		ok := 1-r.delivered() <= maxLoss
		fmt.Fprintf(os.Stderr, "  %s step %s  %s\n", s.name, r, passWord(ok))
		if !ok {
			break
		}
		f.maxRate, f.top = rate, i == len(rates)-1
	}
	return f, nil
}

// machineBusy is the whole machine's non-idle CPU time so far, all CPUs, from /proc/stat.
func machineBusy() time.Duration {
	fh, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	if !sc.Scan() {
		return 0
	}
	f := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal ...
	var busy uint64
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		// idle and iowait are not work; steal is time the hypervisor gave to another VM;
		// guest time is already counted in user.
		if i == 3 || i == 4 || i >= 7 {
			continue
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
}

func coturnBedArgs(bin, dir string) []string {
	return []string{bin, "-n", "--listening-ip=" + vethbed.RelayClientSide.String(), "--listening-port=3478",
		"--relay-ip=" + vethbed.RelayPeerSide.String(),
		"--use-auth-secret", "--static-auth-secret=" + benchSecret, "--realm=" + benchRealm,
		"--no-cli", "--no-tls", "--no-dtls", "--no-tcp-relay", "--min-port=40000", "--max-port=60000",
		"--no-stdout-log", "--simple-log", "--log-file=" + filepath.Join(dir, "coturn-own.log"),
		"--pidfile=" + filepath.Join(dir, "turnserver.pid"), "--userdb=" + filepath.Join(dir, "turndb")}
}

// icehubBedAdmin is icehub's admin (metrics) listener in the relay namespace, which has
// no other listeners, so a fixed port is free.
const icehubBedAdmin = "127.0.0.1:19641"

// icehubBedArgs writes an icehub config for the bed with turn.offload set to offload.
func icehubBedArgs(dir, bindir, offload string) []string {
	cfg := fmt.Sprintf(`[log]
level = "warn"
[turn]
listen = "%s:3478"
relay_ip = "%s"
realm = %q
relay_ports = "40000-60000"
allow_peers = ["203.0.113.0/24"]
max_allocations_per_user = 0
max_allocations = 0
answer_allowance = 1000000000
answer_refill = 1000000000
integrity_rate = 1000000000.0
integrity_burst = 1000000000
max_allocations_per_ip = 0
max_conns_per_ip = 0
tcp_relay = false
offload = %q
[auth]
secrets = [%q]
[signal]
listen = "127.0.0.1:0"
[admin]
listen = %q
`, vethbed.RelayClientSide, vethbed.RelayPeerSide, benchRealm, offload, benchSecret, icehubBedAdmin)
	path := filepath.Join(dir, "icehub-"+offload+".toml")
	_ = os.WriteFile(path, []byte(cfg), 0o600)
	return []string{filepath.Join(bindir, "icehub"), "-config", path}
}

// icehubMetrics reads the /metrics of an icehub in the bed's relay namespace; nil for
// other servers or when it cannot be read.
func icehubMetrics(bed *vethbed.Bed, s xdpServer) map[string]float64 {
	if !strings.HasPrefix(s.name, "icehub") {
		return nil
	}
	m, _ := metrictest.Scrape(bed.HTTPClient(bed.Relay), "http://"+icehubBedAdmin+"/metrics")
	return m
}

func offloadedNote(f *xdpFigures) string {
	if f.offloaded < 0 {
		return ""
	}
	return fmt.Sprintf(" (%.0f %% relayed in the kernel)", 100*f.offloaded)
}

// forwardThroughRelay lets the clients reach the echo peer without a relay: routes through
// the relay namespace, which forwards. undo takes it all back.
func forwardThroughRelay(bed *vethbed.Bed) (undo func(), err error) {
	fwd := func(v string) error {
		return bed.Command(bed.Relay, "sh", "-c", "echo "+v+" > /proc/sys/net/ipv4/ip_forward").Run()
	}
	undo = func() {
		_ = bed.IP(bed.Client, "route", "del", "203.0.113.0/24")
		_ = bed.IP(bed.Peer, "route", "del", "198.51.100.0/24")
		_ = fwd("0")
	}
	if err := fwd("1"); err != nil {
		return nil, fmt.Errorf("ip_forward in the relay namespace: %w", err)
	}
	if err = bed.IP(bed.Client, "route", "add", "203.0.113.0/24", "via", vethbed.RelayClientSide.String()); err == nil {
		err = bed.IP(bed.Peer, "route", "add", "198.51.100.0/24", "via", vethbed.RelayPeerSide.String())
	}
	if err != nil {
		undo()
		return nil, err
	}
	return undo, nil
}
