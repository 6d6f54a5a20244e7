//go:build linux

package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// live tracks started servers so an interrupt still stops them.
var live struct {
	sync.Mutex
	procs map[*proc]bool
}

func track(p *proc) *proc {
	live.Lock()
	defer live.Unlock()
	if live.procs == nil {
		live.procs = map[*proc]bool{}
	}
	live.procs[p] = true
	return p
}

func stopTracked(p *proc) {
	p.stop()
	live.Lock()
	delete(live.procs, p)
	live.Unlock()
}

type compareOpts struct {
	dir, icehubBin, coturnBin, sioDir string
	sessions, size, allocs, idle      int
	pairs, bindSockets, allocWorkers  int
	rates                             []int
	step, fixed, short                time.Duration
	cpuRate, rounds, sigWindow        int
	skipTURN, skipSig, skipRSS        bool
}

// turnFigures are one server's five TURN numbers (best over rounds).
type turnFigures struct {
	maxRate    int  // highest passing step, pps
	maxRateTop bool // the top step passed: the real maximum is higher
	cpuUS      float64
	binding    float64
	allocs     float64
	rss        int64
	notes      []string
}

type sigFigures struct {
	rate, cpuUS, idleKiB float64
	floor                float64 // messages/s through the byte-copying relay (floor mode)
	p50, p99             time.Duration
	notes                []string
}

func cmdCompare(args []string) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	root := fs.String("root", "", "icehub repository root (default: found from the working directory)")
	icehubBin := fs.String("icehub", "", "prebuilt icehub binary (default: go build the repository to a temp dir)")
	coturnBin := fs.String("coturn", "/usr/bin/turnserver", "coturn's turnserver")
	out := fs.String("out", "", "also write the tables, with date and machine, to this file (e.g. bench/RESULTS.md)")
	steps := fs.String("steps", "10k,20k,30k,40k,50k,60k,70k,80k,100k,120k", "total echo rates for figure 1, stepped until the first failing step")
	step := fs.Duration("step", 3*time.Second, "length of each echo step")
	fixed := fs.Duration("fixed", 5*time.Second, "length of the fixed-rate CPU step, the Binding flood and the allocation run")
	cpuRate := fs.Int("cpu-rate", 30000, "echo rate for figure 2, pps")
	sessions := fs.Int("sessions", 100, "TURN sessions for the echo figures")
	size := fs.Int("size", 160, "echo payload bytes")
	allocs := fs.Int("allocs", 10000, "live allocations for figure 5")
	pairs := fs.Int("pairs", 100, "signaling rooms of two")
	idle := fs.Int("idle", 10000, "idle signaling connections for RSS per connection")
	sigDur := fs.Duration("sig", 8*time.Second, "signaling ping-pong length")
	sigWindow := fs.Int("sig-window", 1, "signaling messages in flight per room (1: strict ping-pong, as ANCHORS.md measured)")
	rounds := fs.Int("rounds", 1, "repeat the alternation; each figure keeps its best round")
	quick := fs.Bool("quick", false, "short run (1 s steps, 2 s fixed runs, 3 s ping-pong, 2000 allocations and idle connections) for a smoke test")
	skipTURN := fs.Bool("no-turn", false, "skip the TURN comparison")
	skipSig := fs.Bool("no-signaling", false, "skip the signaling comparison")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rates, err := parseRates(*steps)
	if err != nil {
		return err
	}
	o := compareOpts{coturnBin: *coturnBin, sessions: *sessions, size: *size, allocs: *allocs, idle: *idle,
		pairs: *pairs, bindSockets: 4, allocWorkers: 32, rates: rates, step: *step, fixed: *fixed,
		short: *sigDur, cpuRate: *cpuRate, rounds: max(*rounds, 1), sigWindow: max(*sigWindow, 1), skipTURN: *skipTURN, skipSig: *skipSig}
	if *quick {
		o.step, o.fixed, o.short, o.allocs, o.idle = time.Second, 2*time.Second, 3*time.Second, 2000, 2000
	}
	if *root == "" {
		if *root, err = repoRoot(); err != nil {
			return err
		}
	}
	o.sioDir = filepath.Join(*root, "bench", "socketio")
	if o.dir, err = os.MkdirTemp("", "icehub-bench-"); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "bench: logs and configs in", o.dir)
	o.icehubBin = *icehubBin
	if o.icehubBin == "" {
		o.icehubBin = filepath.Join(o.dir, "icehub-bench")
		fmt.Fprintln(os.Stderr, "bench: go build", *root, "->", o.icehubBin)
		if err := buildIcehub(*root, o.icehubBin); err != nil {
			return err
		}
	}
	// An interrupt stops the servers we started, then exits.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		live.Lock()
		for p := range live.procs {
			p.stop()
		}
		os.Exit(130)
	}()

	began := time.Now()
	var report strings.Builder
	if !o.skipTURN {
		var ice, cot turnFigures
		for r := 0; r < o.rounds; r++ {
			fmt.Fprintf(os.Stderr, "bench: TURN round %d/%d\n", r+1, o.rounds)
			turnRound(&o, &ice, &cot)
		}
		report.WriteString(turnTable(&o, ice, cot))
	}
	if !o.skipSig {
		var hub, sio sigFigures
		for r := 0; r < o.rounds; r++ {
			fmt.Fprintf(os.Stderr, "bench: signaling round %d/%d\n", r+1, o.rounds)
			sigRound(&o, &hub, &sio)
		}
		report.WriteString(sigTable(&o, hub, sio))
	}
	fmt.Fprintf(&report, "\nTotal run time %s.\n", time.Since(began).Round(time.Second))
	fmt.Print(report.String())
	if *out != "" {
		return os.WriteFile(*out, []byte(resultsHeader(os.Args[1:])+report.String()), 0o644)
	}
	return nil
}

// turnRound measures both servers on identical loads, one after the other: the echo
// figures, Binding and allocation rate on one instance, RSS on a fresh one each.
func turnRound(o *compareOpts, ice, cot *turnFigures) {
	starters := []struct {
		f     *turnFigures
		start func() (*proc, error)
	}{
		{ice, func() (*proc, error) { return startIcehub(o.dir, o.icehubBin) }},
		{cot, func() (*proc, error) { return startCoturn(o.dir, o.coturnBin) }},
	}
	for _, s := range starters {
		p, err := s.start()
		if err != nil {
			s.f.notes = append(s.f.notes, "start: "+err.Error())
			continue
		}
		track(p)
		turnLoad(o, p, s.f)
		stopTracked(p)
	}
	if o.allocs <= 0 {
		return
	}
	for _, s := range starters {
		p, err := s.start()
		if err != nil {
			s.f.notes = append(s.f.notes, "start: "+err.Error())
			continue
		}
		track(p)
		r, err := holdAllocations(p.turn, benchSecret, o.allocs, p.pid(), false)
		fmt.Fprintf(os.Stderr, "  %s %v\n", p.name, r)
		switch {
		case err != nil:
			s.f.notes = append(s.f.notes, "rss: "+err.Error())
		case r.failed > 0:
			s.f.notes = append(s.f.notes, fmt.Sprintf("rss: %d of %d allocations failed: %v", r.failed, r.n, r.firstErr))
		case s.f.rss == 0 || r.after < s.f.rss:
			s.f.rss = r.after
		}
		stopTracked(p)
	}
}

func turnLoad(o *compareOpts, p *proc, f *turnFigures) {
	run, err := newEchoRun(p.turn, benchSecret, o.sessions, o.size, 2*time.Millisecond, false)
	if err != nil {
		f.notes = append(f.notes, "echo setup: "+err.Error())
	} else {
		r := run.runStep(o.cpuRate, o.fixed, 300*time.Millisecond, p.pid())
		fmt.Fprintf(os.Stderr, "  %s fixed: %v\n", p.name, r)
		if r.cpuPerPkt > 0 && (f.cpuUS == 0 || r.cpuPerPkt < f.cpuUS) {
			f.cpuUS = r.cpuPerPkt
		}
		best := 0
		for _, rate := range o.rates {
			r := run.runStep(rate, o.step, 300*time.Millisecond, p.pid())
			ok := 1-r.delivered() <= 0.01 && r.p99 <= 20*time.Millisecond
			fmt.Fprintf(os.Stderr, "  %s step: %v %s\n", p.name, r, passWord(ok))
			if !ok {
				break
			}
			best = rate
		}
		if best > f.maxRate {
			f.maxRate, f.maxRateTop = best, best == o.rates[len(o.rates)-1]
		}
		run.close(false)
	}
	b, err := bindingFlood(p.turn, o.bindSockets, 256, o.fixed, p.pid())
	if err != nil {
		f.notes = append(f.notes, "binding: "+err.Error())
	} else {
		fmt.Fprintf(os.Stderr, "  %s %v\n", p.name, b)
		f.binding = max(f.binding, b.rate())
	}
	a := allocRate(p.turn, benchSecret, o.allocWorkers, o.fixed, p.pid())
	fmt.Fprintf(os.Stderr, "  %s %v\n", p.name, a)
	if a.firstErr != nil && a.allocs == 0 {
		f.notes = append(f.notes, "alloc: "+a.firstErr.Error())
	}
	f.allocs = max(f.allocs, a.rate())
}

// sigRound runs the same ping-pong and idle load against icehub's hub and the socket.io
// baseline, one after the other.
func sigRound(o *compareOpts, hub, sio *sigFigures) {
	runs := []struct {
		f     *sigFigures
		d     dialect
		start func() (*proc, error)
	}{
		{hub, hubDialect{}, func() (*proc, error) { return startIcehub(o.dir, o.icehubBin) }},
		{sio, sioDialect{}, func() (*proc, error) { return startSocketIO(o.dir, o.sioDir) }},
	}
	for _, s := range runs {
		p, err := s.start()
		if err != nil {
			s.f.notes = append(s.f.notes, "start: "+err.Error())
			continue
		}
		track(p)
		r, err := pingPong(p.http, p.http, s.d, o.pairs, 200, o.sigWindow, o.short, p.pid())
		if err != nil {
			s.f.notes = append(s.f.notes, "ping-pong: "+err.Error())
		} else {
			fmt.Fprintf(os.Stderr, "  %s %v\n", p.name, r)
			if r.rate() > s.f.rate {
				s.f.rate, s.f.p50, s.f.p99, s.f.cpuUS = r.rate(), r.p50, r.p99, r.cpuPerMsg
			}
		}
		if o.idle > 0 {
			r, err := idleConns(p.http, s.d, o.idle, 8, p.pid())
			if err != nil {
				s.f.notes = append(s.f.notes, "idle: "+err.Error())
			} else {
				fmt.Fprintf(os.Stderr, "  %s %v\n", p.name, r)
				if kib := r.perConn() / 1024; s.f.idleKiB == 0 || kib < s.f.idleKiB {
					s.f.idleKiB = kib
				}
			}
		}
		stopTracked(p)
	}
	if rate, _, _, err := runFloor(o.pairs, 200, o.short); err != nil {
		hub.notes = append(hub.notes, "floor: "+err.Error())
	} else {
		fmt.Fprintf(os.Stderr, "  floor: %.0f messages/s through a byte-copying Go TCP relay\n", rate)
		hub.floor = max(hub.floor, rate)
	}
}
