//go:build linux

package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cmdCluster measures signaling through Redis: one node alone (rooms in memory), one node
// with rooms in Redis, and rooms split across two nodes, on the same ping-pong load.
func cmdCluster(args []string) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	root := fs.String("root", "", "icehub repository root (default: found from the working directory)")
	icehubBin := fs.String("icehub", "", "prebuilt icehub binary (default: go build the repository)")
	redisBin := fs.String("redis", "redis-server", "redis-server binary")
	pairs := fs.Int("pairs", 100, "rooms of two clients")
	dur := fs.Duration("duration", 8*time.Second, "ping-pong length per setup")
	out := fs.String("out", "", "append the table to this file (e.g. bench/RESULTS.md)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "icehub-cluster-bench-")
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "bench: logs and configs in", dir)
	bin := *icehubBin
	if bin == "" {
		if *root == "" {
			if *root, err = repoRoot(); err != nil {
				return err
			}
		}
		bin = filepath.Join(dir, "icehub-bench")
		if err := buildIcehub(*root, bin); err != nil {
			return err
		}
	}
	redisPort, err := freePort()
	if err != nil {
		return err
	}
	redisAddr := "127.0.0.1:" + strconv.Itoa(redisPort)
	rds, err := start(dir, "redis", []string{*redisBin, "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no"}, dir, tcpReady(redisAddr))
	if err != nil {
		return err
	}
	defer rds.stop()

	type setup struct {
		name  string
		nodes []string // cluster node ids; nil: one node without Redis
		split bool
	}
	var rows []string
	for _, s := range []setup{
		{"one node, rooms in memory", nil, false},
		{"one node, rooms in Redis", []string{"a"}, false},
		{"two nodes, every room split across them", []string{"a", "b"}, true},
	} {
		var procs []*proc
		var hosts []string
		n := max(len(s.nodes), 1)
		for i := range n {
			extra := ""
			if s.nodes != nil {
				extra = fmt.Sprintf("[cluster]\nredis_url = \"redis://%s/0\"\nnode_id = %q\n", redisAddr, s.nodes[i])
			}
			p, err := startIcehubNode(dir, fmt.Sprintf("icehub-%d", i), bin, extra)
			if err != nil {
				return err
			}
			procs = append(procs, p)
			hosts = append(hosts, p.http)
		}
		host2 := hosts[len(hosts)-1]
		r, err := pingPong(hosts[0], host2, hubDialect{}, *pairs, 200, 1, *dur, procs[0].pid())
		for _, p := range procs {
			p.stop()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintln(os.Stderr, " ", s.name+":", r)
		rows = append(rows, fmt.Sprintf("| %s | %.0f | %s | %s |", s.name, r.rate(), fmtMS(r.p50), fmtMS(r.p99)))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Signaling across nodes (Redis)\n\n`go run ./bench cluster` — %d rooms of two ping-ponging 200-byte messages for %s per setup, redis-server on loopback.\n\n",
		*pairs, *dur)
	b.WriteString("| setup | messages/s | p50 | p99 |\n| --- | --- | --- | --- |\n")
	b.WriteString(strings.Join(rows, "\n") + "\n")
	fmt.Print(b.String())
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteString(b.String())
		return err
	}
	return nil
}

// startIcehubNode starts one icehub with the bench config plus extra TOML, in its own files.
func startIcehubNode(dir, name, bin, extra string) (*proc, error) {
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	cfg := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(cfg, []byte(icehubConfig(ports[0], ports[1], ports[2])+extra), 0o600); err != nil {
		return nil, err
	}
	turn := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ports[0]}
	sig := "127.0.0.1:" + strconv.Itoa(ports[1])
	p, err := start(dir, name, []string{bin, "-config", cfg}, dir, all(stunReady(turn), tcpReady(sig)))
	if err != nil {
		return nil, err
	}
	p.turn, p.http, p.admin = turn, sig, "127.0.0.1:"+strconv.Itoa(ports[2])
	return p, nil
}
