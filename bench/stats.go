//go:build linux

package main

import (
	"bytes"
	"fmt"
	"math/bits"
	"os"
	"strconv"
	"strings"
	"time"
)

// histogram is a log-linear latency histogram in microseconds: 32 sub-buckets per power of
// two (≈3 % error), fixed size, no allocation per sample, so readers can record every packet.
type histogram struct {
	counts [64 + 64*32]uint32
	n      uint64
}

func histBucket(us uint64) int {
	if us < 64 {
		return int(us)
	}
	e := bits.Len64(us) - 6 // us>>e lands in [32, 64)
	return 64 + (e-1)*32 + int(us>>e) - 32
}

func histValue(i int) uint64 {
	if i < 64 {
		return uint64(i)
	}
	e := (i-64)/32 + 1
	sub := uint64((i-64)%32 + 32)
	return sub << e
}

func (h *histogram) add(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	h.counts[histBucket(uint64(us))]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

func (h *histogram) reset() { *h = histogram{} }

// quantile returns the q-quantile (0..1) as a duration; 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	want := uint64(q*float64(h.n) + 0.5)
	if want < 1 {
		want = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= want {
			return time.Duration(histValue(i)) * time.Microsecond
		}
	}
	return time.Duration(histValue(len(h.counts)-1)) * time.Microsecond
}

// clockTicks is USER_HZ; Linux fixes it at 100 for every architecture we run on, and
// reading it properly needs cgo's sysconf.
const clockTicks = 100

// procCPU returns utime+stime of pid (all threads) from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	// After ')': state(0) ... utime is field 14 of the full line, i.e. index 11 here.
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// procRSS returns VmRSS of pid in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// cpuMeter brackets a measurement window; with pid 0 it measures nothing.
type cpuMeter struct {
	pid   int
	start time.Duration
}

func startCPU(pid int) cpuMeter {
	m := cpuMeter{pid: pid}
	if pid > 0 {
		m.start, _ = procCPU(pid)
	}
	return m
}

// perUnit returns server CPU per unit of work in µs, or -1 when unknown.
func (m cpuMeter) perUnit(units uint64) float64 {
	if m.pid <= 0 || units == 0 {
		return -1
	}
	end, err := procCPU(m.pid)
	if err != nil {
		return -1
	}
	return float64((end - m.start).Microseconds()) / float64(units)
}

func fmtMS(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}
