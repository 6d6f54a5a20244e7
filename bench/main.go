//go:build linux

// Command bench is icehub's load generator and its side-by-side benchmark against coturn
// (TURN) and the seed's socket.io server (signaling). It speaks STUN/TURN itself on raw UDP
// sockets with batched I/O, so on a 2-core machine the generator costs less than the server
// it measures. See bench/README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usage = `usage: go run ./bench <mode> [flags]

modes:
  echo       N TURN sessions ChannelData-echoing through the server to an in-process peer
  binding    STUN Binding flood from K sockets
  alloc      allocations set up per second (Allocate with 401 round, then Refresh lifetime 0)
  rss        hold N live allocations and read the server's VmRSS
  signaling  WebSocket ping-pong in rooms of two, and RSS per idle connection
  floor      the signaling ping-pong through a Go relay that only copies TCP bytes: the
             ceiling any Go hub has on this machine
  soak       build and start icehub, churn allocations and WebSockets for -duration (5m),
             report RSS, goroutines and open fds at start and end (must return to baseline)
  compare    build icehub, run it and coturn (and the socket.io baseline) alternately on
             identical loads, print a markdown table of ratios
  cap        the bitrate cap (turn.max_bitrate): delivered against offered around the
             cap, both ways, icehub and coturn (--max-bps) side by side
  flood      spoofed floods from the clients' own address against icehub and coturn: do
             fresh clients still set up and relay, and how many bytes go back (issue 11)
  xdp        the XDP offload (issue 16) in network namespaces: coturn, icehub and icehub
             with turn.offload = "xdp" alternately; machine CPU per relayed packet and the
             highest clean echo rate, with the machine's load next to them (root)

go run ./bench <mode> -h lists the mode's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	raiseNoFile()
	var err error
	switch mode, args := os.Args[1], os.Args[2:]; mode {
	case "echo":
		err = cmdEcho(args)
	case "binding":
		err = cmdBinding(args)
	case "alloc":
		err = cmdAlloc(args)
	case "rss":
		err = cmdRSS(args)
	case "signaling":
		err = cmdSignaling(args)
	case "floor":
		err = cmdFloor(args)
	case "tcprelay": // floor's relay process
		err = cmdTCPRelay(args)
	case "compare":
		err = cmdCompare(args)
	case "cluster":
		err = cmdCluster(args)
	case "soak":
		err = cmdSoak(args)
	case "xdp":
		err = cmdXDP(args)
	case "flood":
		err = cmdFlood(args)
	case "cap":
		err = cmdCap(args)
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "bench: unknown mode %q\n%s", mode, usage)
		os.Exit(2)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// raiseNoFile lifts the soft descriptor limit to the hard one: the rss and idle modes hold
// 10 000 sockets, and children (the servers) inherit the limit.
func raiseNoFile() {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}

// turnFlags are shared by the TURN modes.
type turnFlags struct {
	server *string
	secret *string
	pid    *int
}

func addTURNFlags(fs *flag.FlagSet) turnFlags {
	return turnFlags{
		server: fs.String("server", "127.0.0.1:3478", "STUN/TURN server UDP address (loopback only)"),
		secret: fs.String("secret", "bench-secret", "TURN REST shared secret (static-auth-secret / auth.secrets)"),
		pid:    fs.Int("pid", 0, "server PID, for CPU (/proc/PID/stat) and RSS (/proc/PID/status); 0: not measured"),
	}
}

// loopbackUDP resolves addr and refuses anything off loopback: this tool floods.
func loopbackUDP(addr string) (*net.UDPAddr, error) {
	a, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return nil, err
	}
	if !a.IP.IsLoopback() {
		return nil, fmt.Errorf("%s is not a loopback address; bench only sends to 127.0.0.0/8", addr)
	}
	return a, nil
}

func loopbackHost(hostport string) error {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(h); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s is not a loopback address; bench only connects to 127.0.0.0/8", hostport)
	}
	return nil
}

func parseRates(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(strings.ToLower(f))
		if f == "" {
			continue
		}
		mul := 1
		if strings.HasSuffix(f, "k") {
			mul, f = 1000, strings.TrimSuffix(f, "k")
		}
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad rate %q", f)
		}
		out = append(out, v*mul)
	}
	return out, nil
}

func cmdEcho(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	tf := addTURNFlags(fs)
	sessions := fs.Int("sessions", 100, "allocations, one client socket each")
	pps := fs.Int("pps", 300, "packets per second per session (ignored with -steps)")
	steps := fs.String("steps", "", "comma-separated total rates to step through, e.g. 10k,20k,40k; stops at the first step over -max-loss or -max-p99")
	size := fs.Int("size", 160, "payload bytes (≥16: timestamp, step, sequence)")
	dur := fs.Duration("duration", 5*time.Second, "length of each step")
	drain := fs.Duration("drain", 300*time.Millisecond, "wait after each step for late echoes (later = lost)")
	tick := fs.Duration("tick", 2*time.Millisecond, "pacing interval; each session sends its due packets in one sendmmsg per tick")
	maxLoss := fs.Float64("max-loss", 0.01, "loss above which a step fails")
	maxP99 := fs.Duration("max-p99", 20*time.Millisecond, "p99 RTT above which a step fails")
	direct := fs.Bool("direct", false, "no relay: sessions send straight to the echo peer (the generator's own ceiling)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	server, err := loopbackUDP(*tf.server)
	if err != nil {
		return err
	}
	rates := []int{*pps * *sessions}
	if *steps != "" {
		if rates, err = parseRates(*steps); err != nil {
			return err
		}
	}
	run, err := newEchoRun(server, *tf.secret, *sessions, *size, *tick, *direct)
	if err != nil {
		return err
	}
	defer run.close(true)
	fmt.Printf("echo: %d sessions set up in %v (%.0f allocations/s incl. permission and channel)\n",
		*sessions, run.setup.elapsed.Round(time.Millisecond), float64(*sessions)/run.setup.elapsed.Seconds())
	best := 0
	for _, rate := range rates {
		r := run.runStep(rate, *dur, *drain, *tf.pid)
		ok := 1-r.delivered() <= *maxLoss && r.p99 <= *maxP99
		fmt.Printf("%s  %s\n", r, passWord(ok))
		if !ok {
			break
		}
		best = rate
	}
	if len(rates) > 1 {
		fmt.Printf("highest rate sustained: %d pps\n", best)
	}
	return nil
}

func passWord(ok bool) string {
	if ok {
		return "ok"
	}
	return "OVER"
}

func cmdBinding(args []string) error {
	fs := flag.NewFlagSet("binding", flag.ContinueOnError)
	tf := addTURNFlags(fs)
	k := fs.Int("sockets", 4, "client sockets")
	window := fs.Int("window", 256, "requests outstanding per socket")
	dur := fs.Duration("duration", 5*time.Second, "flood length")
	if err := fs.Parse(args); err != nil {
		return err
	}
	server, err := loopbackUDP(*tf.server)
	if err != nil {
		return err
	}
	r, err := bindingFlood(server, *k, *window, *dur, *tf.pid)
	if err != nil {
		return err
	}
	fmt.Println(r)
	return nil
}

func cmdAlloc(args []string) error {
	fs := flag.NewFlagSet("alloc", flag.ContinueOnError)
	tf := addTURNFlags(fs)
	workers := fs.Int("workers", 32, "concurrent clients, each allocating and freeing in a loop")
	dur := fs.Duration("duration", 5*time.Second, "run length")
	if err := fs.Parse(args); err != nil {
		return err
	}
	server, err := loopbackUDP(*tf.server)
	if err != nil {
		return err
	}
	fmt.Println(allocRate(server, *tf.secret, *workers, *dur, *tf.pid))
	return nil
}

func cmdRSS(args []string) error {
	fs := flag.NewFlagSet("rss", flag.ContinueOnError)
	tf := addTURNFlags(fs)
	n := fs.Int("allocs", 10000, "live allocations to hold (server quotas must allow them)")
	dealloc := fs.Bool("dealloc", true, "free the allocations afterwards (Refresh lifetime 0)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	server, err := loopbackUDP(*tf.server)
	if err != nil {
		return err
	}
	r, err := holdAllocations(server, *tf.secret, *n, *tf.pid, *dealloc)
	if err != nil {
		return err
	}
	fmt.Println(r)
	return nil
}

func cmdSignaling(args []string) error {
	fs := flag.NewFlagSet("signaling", flag.ContinueOnError)
	host := fs.String("host", "127.0.0.1:8080", "signaling server host:port (loopback only)")
	proto := fs.String("proto", "hub", "hub (icehub's /ws JSON protocol) or sio (socket.io v4 baseline)")
	pid := fs.Int("pid", 0, "server PID for CPU and RSS; 0: not measured")
	pairs := fs.Int("pairs", 100, "rooms of two clients")
	size := fs.Int("size", 200, "message data bytes")
	window := fs.Int("window", 1, "messages in flight per room")
	dur := fs.Duration("duration", 10*time.Second, "measurement length")
	idle := fs.Int("idle", 0, "then open this many idle connections and report RSS per connection (needs -pid)")
	ips := fs.Int("ips", 8, "idle connections come from 127.0.0.1 .. 127.0.0.<ips>")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := loopbackHost(*host); err != nil {
		return err
	}
	d, err := pickDialect(*proto)
	if err != nil {
		return err
	}
	if *pairs > 0 {
		r, err := pingPong(*host, *host, d, *pairs, *size, *window, *dur, *pid)
		if err != nil {
			return err
		}
		fmt.Println(r)
	}
	if *idle > 0 {
		r, err := idleConns(*host, d, *idle, *ips, *pid)
		if err != nil {
			return err
		}
		fmt.Println(r)
	}
	return nil
}

func pickDialect(proto string) (dialect, error) {
	switch proto {
	case "hub":
		return hubDialect{}, nil
	case "sio", "socketio", "socket.io":
		return sioDialect{}, nil
	}
	return nil, fmt.Errorf("-proto must be hub or sio, not %q", proto)
}
