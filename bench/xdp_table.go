//go:build linux

package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

func printXDPTable(w io.Writer, order []xdpServer, all map[string][]*xdpFigures, cpuRate, size, sessions int) {
	summary := map[string]*xdpFigures{}
	for name, fs := range all {
		summary[name] = medianFigures(fs)
	}
	base := summary["coturn"]
	fmt.Fprintf(w, "\n### TURN relay in network namespaces (veth), %d sessions, %d-byte payload, %d rounds\n\n", sessions, size, len(all[order[0].name]))
	fmt.Fprintf(w, "| server | machine CPU per relayed packet @ %d echo/s (median; every round) | server process CPU | softirq (machine) | highest echo rate ≤ 1 %% loss (best round) | vs coturn (CPU, rate) | relayed in the kernel |\n", cpuRate)
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- |")
	ratio := func(a, b float64) string {
		if a <= 0 || b <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	for _, s := range order {
		f := summary[s.name]
		rate := strconv.Itoa(f.maxRate)
		if f.top {
			rate = "≥ " + rate
		}
		vs := "—"
		if base != nil && base != f {
			vs = ratio(f.cpuUS, base.cpuUS) + ", " + ratio(float64(f.maxRate), float64(base.maxRate))
		}
		kernel := "—"
		if f.offloaded >= 0 {
			kernel = fmt.Sprintf("%.0f %%", 100*f.offloaded)
		}
		proc := "—"
		if f.procUS >= 0 {
			proc = fmt.Sprintf("%.2f µs", f.procUS)
		}
		var rounds []string
		for _, r := range all[s.name] {
			rounds = append(rounds, fmt.Sprintf("%.1f", r.cpuUS))
		}
		fmt.Fprintf(w, "| %s | %.2f µs (%s) | %s | %.2f µs | %s | %s | %s |\n", s.name, f.cpuUS, strings.Join(rounds, ", "), proc, f.softirqUS, rate, vs, kernel)
	}
	fmt.Fprintln(w, "\nGoals (issue 16): machine CPU ≤ 0.6× coturn's, echo rate ≥ 1.5× coturn's. The load generator")
	fmt.Fprintln(w, "and the echo peer share the 2 cores and are in the whole-machine figure too. `forward` sends")
	fmt.Fprintln(w, "straight to the echo peer through the relay namespace's IP forwarding, with no TURN at all.")
}

// medianFigures is the median round's CPU figures and the best round's rate.
func medianFigures(fs []*xdpFigures) *xdpFigures {
	sorted := slices.Clone(fs)
	slices.SortFunc(sorted, func(a, b *xdpFigures) int { return cmp.Compare(a.cpuUS, b.cpuUS) })
	m := *sorted[len(sorted)/2]
	for _, f := range fs {
		if f.maxRate > m.maxRate {
			m.maxRate, m.top = f.maxRate, f.top
		}
	}
	return &m
}
