//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// row is one line of a comparison table. higher says which direction is better; target is
// the ratio icehub/baseline must reach (≥ when higher, ≤ otherwise).
type row struct {
	n, figure string
	a, b      float64
	fa, fb    string
	higher    bool
	target    float64
	absolute  bool // target applies to a itself, not the ratio
	aNote     string
}

func (r row) render() string {
	ratio, verdict := "—", "n/a"
	if r.a > 0 && r.b > 0 {
		ratio = fmt.Sprintf("%.2f×", r.a/r.b)
	}
	cmp := "≤"
	if r.higher {
		cmp = "≥"
	}
	target := fmt.Sprintf("%s %.2g×", cmp, r.target)
	subject := 0.0
	switch {
	case r.absolute:
		target = fmt.Sprintf("%s %g (absolute)", cmp, r.target)
		subject = r.a
	case r.a > 0 && r.b > 0:
		subject = r.a / r.b
	}
	if subject > 0 {
		if (r.higher && subject >= r.target) || (!r.higher && subject <= r.target) {
			verdict = "PASS"
		} else {
			verdict = "FAIL"
		}
	}
	if r.target == 0 {
		target, verdict = "(info)", ""
	}
	return fmt.Sprintf("| %s | %s | %s%s | %s | %s | %s | %s |\n", r.n, r.figure, r.fa, r.aNote, r.fb, ratio, target, verdict)
}

func num(v float64, unit string, prec int) string {
	if v <= 0 {
		return "—"
	}
	s := fmt.Sprintf("%.*f", prec, v)
	// thousands separators (thin spaces are not copy-safe; plain spaces)
	if i := strings.IndexByte(s, '.'); prec == 0 || i > 3 {
		intPart, frac := s, ""
		if i >= 0 {
			intPart, frac = s[:i], s[i:]
		}
		var b strings.Builder
		for k, c := range intPart {
			if k > 0 && (len(intPart)-k)%3 == 0 {
				b.WriteByte(' ')
			}
			b.WriteRune(c)
		}
		s = b.String() + frac
	}
	return s + unit
}

func turnTable(o *compareOpts, ice, cot turnFigures) string {
	var b strings.Builder
	b.WriteString("\n## TURN: icehub vs coturn\n\n")
	fmt.Fprintf(&b, "%d sessions, %d-byte payloads, echo steps of %s, fixed runs of %s, alternating (never in parallel).\n\n",
		o.sessions, o.size, o.step, o.fixed)
	b.WriteString("| # | figure | icehub | coturn | icehub/coturn | target | result |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	top := func(f turnFigures) string {
		if f.maxRateTop {
			return " (top step: real maximum higher)"
		}
		return ""
	}
	rows := []row{
		{n: "1", figure: "highest echo rate with ≤ 1 % loss and p99 RTT ≤ 20 ms", a: float64(ice.maxRate), b: float64(cot.maxRate),
			fa: num(float64(ice.maxRate), " pps", 0), fb: num(float64(cot.maxRate), " pps", 0) + top(cot), aNote: top(ice), higher: true, target: 1.3},
		{n: "2", figure: fmt.Sprintf("server CPU per relayed packet at %s echo pps", num(float64(o.cpuRate), "", 0)), a: ice.cpuUS, b: cot.cpuUS,
			fa: num(ice.cpuUS, " µs", 2), fb: num(cot.cpuUS, " µs", 2), target: 0.75},
		{n: "3", figure: fmt.Sprintf("STUN Binding answers per second (%d sockets)", o.bindSockets), a: ice.binding, b: cot.binding,
			fa: num(ice.binding, "/s", 0), fb: num(cot.binding, "/s", 0), higher: true, target: 1.2},
		{n: "4", figure: fmt.Sprintf("allocations set up per second (%d clients, 401 round + Refresh 0)", o.allocWorkers), a: ice.allocs, b: cot.allocs,
			fa: num(ice.allocs, "/s", 0), fb: num(cot.allocs, "/s", 0), higher: true, target: 1.5},
		{n: "5", figure: fmt.Sprintf("server RSS with %s live allocations", num(float64(o.allocs), "", 0)), a: float64(ice.rss), b: float64(cot.rss),
			fa: num(float64(ice.rss)/(1<<20), " MiB", 1), fb: num(float64(cot.rss)/(1<<20), " MiB", 1), target: 1.0},
	}
	for _, r := range rows {
		b.WriteString(r.render())
	}
	notes(&b, "icehub", ice.notes)
	notes(&b, "coturn", cot.notes)
	return b.String()
}

func sigTable(o *compareOpts, hub, sio sigFigures) string {
	var b strings.Builder
	b.WriteString("\n## Signaling: icehub hub vs the seed's socket.io logic\n\n")
	fmt.Fprintf(&b, "%d rooms of two ping-ponging 200-byte messages (%d in flight per room) for %s; then %s idle connections. "+
		"Both driven by the same Go client (socket.io spoken as Engine.IO v4 frames over gorilla/websocket).\n\n",
		o.pairs, o.sigWindow, o.short, num(float64(o.idle), "", 0))
	b.WriteString("| # | figure | icehub | socket.io | icehub/socket.io | target | result |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rows := []row{
		{n: "6", figure: "messages relayed per second", a: hub.rate, b: sio.rate,
			fa: num(hub.rate, "/s", 0), fb: num(sio.rate, "/s", 0), higher: true, target: 5},
		{n: "6a", figure: "one-way latency p50", a: ms(hub.p50), b: ms(sio.p50), fa: num(ms(hub.p50), " ms", 2), fb: num(ms(sio.p50), " ms", 2)},
		{n: "6b", figure: "one-way latency p99", a: ms(hub.p99), b: ms(sio.p99), fa: num(ms(hub.p99), " ms", 2), fb: num(ms(sio.p99), " ms", 2)},
		{n: "6c", figure: "server CPU per message", a: hub.cpuUS, b: sio.cpuUS, fa: num(hub.cpuUS, " µs", 1), fb: num(sio.cpuUS, " µs", 1)},
		{n: "6d", figure: "ceiling: the same ping-pong through a Go relay that only copies TCP bytes (`go run ./bench floor`), messages/s",
			a: hub.floor, b: sio.rate, fa: num(hub.floor, "/s", 0), fb: num(sio.rate, "/s", 0)},
		{n: "7", figure: fmt.Sprintf("RSS per idle connection at %s connections, KiB", num(float64(o.idle), "", 0)), a: hub.idleKiB, b: sio.idleKiB,
			fa: num(hub.idleKiB, " KiB", 1), fb: num(sio.idleKiB, " KiB", 1), target: 20, absolute: true},
	}
	for _, r := range rows {
		b.WriteString(r.render())
	}
	notes(&b, "icehub", hub.notes)
	notes(&b, "socket.io", sio.notes)
	return b.String()
}

func notes(b *strings.Builder, who string, ns []string) {
	for _, n := range ns {
		fmt.Fprintf(b, "\n- %s: %s", who, strings.ReplaceAll(n, "\n", " "))
	}
	if len(ns) > 0 {
		b.WriteString("\n")
	}
}

// resultsHeader records when and where the figures were taken: ratios only compare within
// one run on one machine.
func resultsHeader(args []string) string {
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	nodeV, _ := exec.Command("node", "--version").Output()
	return fmt.Sprintf("# icehub bench results\n\n- date: %s\n- machine: %d CPUs (nproc), %s, kernel %s\n- %s, node %s\n- command: `go run ./bench %s`\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), model, kernel, runtime.Version(),
		strings.TrimSpace(string(nodeV)), strings.Join(args, " "))
}
