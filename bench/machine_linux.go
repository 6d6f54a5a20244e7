package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// machineLoad records what else the machine did during a run: the load averages at its
// start and end, and the share of CPU time the hypervisor gave to other VMs (steal). On a
// shared or busy machine the whole-machine figures include that work; printed next to the
// figures, it says how far to trust them.
type machineLoad struct {
	loadStart string
	stat0     []uint64
}

func startLoad() machineLoad { return machineLoad{loadStart: loadavg(), stat0: cpuStat()} }

func (m machineLoad) end() string {
	s1 := cpuStat()
	var total, steal, idle uint64
	for i := range min(len(m.stat0), len(s1)) {
		d := s1[i] - m.stat0[i]
		if i < 8 { // user nice system idle iowait irq softirq steal; guest is inside user
			total += d
		}
		switch i {
		case 3, 4:
			idle += d
		case 7:
			steal += d
		}
	}
	pct := func(v uint64) float64 {
		if total == 0 {
			return 0
		}
		return 100 * float64(v) / float64(total)
	}
	return fmt.Sprintf("Machine during the run: load average %s at start, %s at end (%d CPUs); CPU time idle %.0f %%, stolen by the hypervisor %.1f %%.",
		m.loadStart, loadavg(), len(cpuCores()), pct(idle), pct(steal))
}

// loadavg is the first three fields of /proc/loadavg (1, 5 and 15 minutes).
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// cpuStat is the aggregate "cpu" line of /proc/stat, in clock ticks.
func cpuStat() []uint64 {
	fh, err := os.Open("/proc/stat")
	if err != nil {
		return nil
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	if !sc.Scan() {
		return nil
	}
	var out []uint64
	for _, v := range strings.Fields(sc.Text())[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		out = append(out, n)
	}
	return out
}

// cpuCores lists the per-CPU lines of /proc/stat.
func cpuCores() []string {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "cpu") && !strings.HasPrefix(l, "cpu ") {
			out = append(out, l)
		}
	}
	return out
}

// softirqTime is the machine's softirq time so far, all CPUs: where XDP programs and the
// veth receive path run, for whichever process happened to be on the CPU.
func softirqTime() time.Duration {
	st := cpuStat()
	if len(st) < 7 {
		return 0
	}
	return time.Duration(st[6]) * time.Second / clockTicks
}
