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
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
)

// cmdFlood measures what a spoofed flood "from" the clients' own address does to them
// (issue 11 point 5): for icehub with its default limits and for coturn as ANCHORS.md starts
// it, alternately, with no flood, a flood of bare Allocates and a flood of wrong-credential
// Allocates (carrying a nonce fetched from another address), each from -socks sockets on
// 127.0.0.1 at -pps each, never reading what comes back, as a blind spoofer cannot. While it
// runs, -sessions fresh TURN sessions from 127.0.0.1 set up an allocation and echo through a
// peer at -rate packets per second in all; reported: sessions set up, setup time, loss, RTT
// p50/p99, and the bytes answered toward the address against the bytes the flood sent.
func cmdFlood(args []string) error {
	fs := flag.NewFlagSet("flood", flag.ContinueOnError)
	socks := fs.Int("socks", 8, "flood sockets")
	pps := fs.Int("pps", 1500, "requests per second per flood socket")
	sessions := fs.Int("sessions", 5, "legitimate TURN sessions")
	rate := fs.Int("rate", 250, "echo packets per second over all sessions")
	dur := fs.Duration("dur", 5*time.Second, "measured echo window per case")
	servers := fs.String("servers", "icehub,coturn", "servers to measure")
	out := fs.String("out", "", "append the markdown table to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, bin, err := buildInTemp("icehub-flood")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// Every legitimate session comes from 127.0.0.1, the flood's (spoofed) source.
	sourceFor = func(int) *net.UDPAddr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)} }
	var rows []floodRow
	for _, name := range strings.Split(*servers, ",") {
		var p *proc
		switch name {
		case "icehub":
			p, err = startFloodIcehub(dir, bin)
		case "coturn":
			p, err = startCoturn(dir, "turnserver")
		default:
			return fmt.Errorf("unknown server %q", name)
		}
		if err != nil {
			return err
		}
		nonce, err := foreignNonce(p.turn)
		if err != nil {
			p.stop()
			return err
		}
		for _, kind := range []string{"none", "bare Allocate", "wrong credentials"} {
			row := floodCase(p, name, kind, nonce, *socks, *pps, *sessions, *rate, *dur)
			fmt.Fprintln(os.Stderr, "  "+row.String())
			rows = append(rows, row)
		}
		p.stop()
	}
	table := floodTable(rows, *socks, *pps, *sessions, *rate)
	fmt.Print(table)
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteString(table)
		return err
	}
	return nil
}

// startFloodIcehub runs icehub with its default limits: only the listeners, the secret and
// the loopback echo peer are set.
func startFloodIcehub(dir, bin string) (*proc, error) {
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	cfg := filepath.Join(dir, "flood.toml")
	text := fmt.Sprintf(`[turn]
listen = "127.0.0.1:%d"
realm = %q
relay_ports = "40000-60000"
allow_peers = ["127.0.0.1/32"]
[auth]
secrets = [%q]
[signal]
listen = "127.0.0.1:%d"
[admin]
listen = "127.0.0.1:%d"
`, ports[0], benchRealm, benchSecret, ports[1], ports[2])
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return nil, err
	}
	turn := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ports[0]}
	p, err := start(dir, "icehub", []string{bin, "-config", cfg}, dir, stunReady(turn))
	if err != nil {
		return nil, err
	}
	p.turn = turn
	return p, nil
}

// foreignNonce is what an attacker gets by asking from its own address (127.0.0.2).
func foreignNonce(server *net.UDPAddr) (string, error) {
	c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}, server)
	if err != nil {
		return "", err
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}})
	buf := make([]byte, 1500)
	for range 5 {
		_, _ = c.Write(req.Raw)
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		m := &stun.Message{Raw: buf[:n]}
		var nonce stun.Nonce
		if m.Decode() == nil && nonce.GetFrom(m) == nil {
			return nonce.String(), nil
		}
	}
	return "", fmt.Errorf("no nonce from %v", server)
}

type floodRow struct {
	server, kind          string
	setUp, sessions       int
	setup                 time.Duration
	echo                  stepResult
	floodSent, floodBytes int64
	answered, answerBytes int64
}

func (r floodRow) ratio() string {
	if r.floodBytes == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", float64(r.answerBytes)/float64(r.floodBytes))
}

func (r floodRow) String() string {
	return fmt.Sprintf("%-7s %-18s set up %d/%d in %v; echo lost %.2f %%, p50 %s p99 %s; flood %d req (%d B), answered %d (%d B, ratio %s)",
		r.server, r.kind, r.setUp, r.sessions, r.setup.Round(time.Millisecond), 100*(1-r.echo.delivered()),
		fmtMS(r.echo.p50), fmtMS(r.echo.p99), r.floodSent, r.floodBytes, r.answered, r.answerBytes, r.ratio())
}

// floodCase runs one flood (kind "none": none) against p while sessions set up and echo.
func floodCase(p *proc, server, kind, nonce string, socks, pps, sessions, rate int, dur time.Duration) floodRow {
	row := floodRow{server: server, kind: kind, sessions: sessions}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent, sentBytes, answered, answerBytes atomic.Int64
	if kind != "none" {
		for i := range socks {
			c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, p.turn)
			if err != nil {
				continue
			}
			_ = c.SetReadBuffer(4 << 20)
			wg.Add(2)
			go func() { // what comes back: counted, never used
				defer wg.Done()
				buf := make([]byte, 2048)
				for {
					_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
					n, err := c.Read(buf)
					if err != nil {
						select {
						case <-stop:
							return
						default:
							continue
						}
					}
					answered.Add(1)
					answerBytes.Add(int64(n))
				}
			}()
			go func() {
				defer wg.Done()
				defer c.Close()
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				per := max(pps/100, 1)
				for k := 0; ; {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					for range per {
						b := floodRequest(kind, i*1_000_000+k, nonce)
						if _, err := c.Write(b); err == nil {
							sent.Add(1)
							sentBytes.Add(int64(len(b)))
						}
						k++
					}
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
	}
	run, err := newEchoRun(p.turn, benchSecret, sessions, 100, 2*time.Millisecond, false)
	if err == nil {
		row.setUp, row.setup = sessions, run.setup.elapsed
		row.echo = run.runStep(rate, dur, 500*time.Millisecond, 0)
		run.close(true)
	} else {
		fmt.Fprintln(os.Stderr, "  sessions:", err)
	}
	close(stop)
	wg.Wait()
	row.floodSent, row.floodBytes = sent.Load(), sentBytes.Load()
	row.answered, row.answerBytes = answered.Load(), answerBytes.Load()
	return row
}

func floodRequest(kind string, k int, nonce string) []byte {
	if kind == "bare Allocate" {
		return stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
			stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}).Raw
	}
	user := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + ":intruder" + strconv.Itoa(k%64)
	return stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}},
		stun.NewUsername(user), stun.NewRealm(benchRealm), stun.NewNonce(nonce),
		stun.NewLongTermIntegrity(user, benchRealm, "wrong-password"), stun.Fingerprint).Raw
}

// floodTable prints the rows, judging each flood against the same server's idle row: every
// session set up, loss ≤ 1 %, p99 ≤ 2 × idle + 2 ms, answered bytes ≤ flood bytes.
func floodTable(rows []floodRow, socks, pps, sessions, rate int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Spoofed floods from the clients' own address (%s)\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "%d sockets × %d requests/s from 127.0.0.1; %d fresh sessions from 127.0.0.1 echoing %d packets/s in all. Command: `go run ./bench flood`.\n\n", socks, pps, sessions, rate)
	b.WriteString("| server | flood | sessions set up | echo loss | RTT p50 | RTT p99 | answered / flood bytes | goal met |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	idle := map[string]floodRow{}
	for _, r := range rows {
		if r.kind == "none" {
			idle[r.server] = r
		}
	}
	for _, r := range rows {
		goal := ""
		if r.kind != "none" {
			i := idle[r.server]
			ok := r.setUp == r.sessions && 1-r.echo.delivered() <= 0.01 &&
				r.echo.p99 <= 2*i.echo.p99+2*time.Millisecond && r.answerBytes <= r.floodBytes
			goal = map[bool]string{true: "yes", false: "no"}[ok]
		}
		fmt.Fprintf(&b, "| %s | %s | %d/%d | %.2f %% | %s | %s | %s | %s |\n", r.server, r.kind, r.setUp, r.sessions,
			100*(1-r.echo.delivered()), fmtMS(r.echo.p50), fmtMS(r.echo.p99), r.ratio(), goal)
	}
	return b.String()
}
