//go:build linux

package main

import (
	"fmt"
	"net"
	"time"
)

// allocResult is one allocation-rate run.
type allocResult struct {
	allocs, failed uint64
	dur            time.Duration
	firstErr       error
	cpu, gen       float64 // µs of server and of generator CPU per allocation
}

func (r allocResult) rate() float64 { return float64(r.allocs) / r.dur.Seconds() }

func (r allocResult) String() string {
	s := fmt.Sprintf("alloc-rate: %.0f allocations/s (%d in %.1fs, %d failed), server cpu/allocation %.1f µs (generator %.1f µs)",
		r.rate(), r.allocs, r.dur.Seconds(), r.failed, r.cpu, r.gen)
	if r.firstErr != nil {
		s += fmt.Sprintf(", first error: %v", r.firstErr)
	}
	return s
}

// rssResult is the server's memory with n live allocations.
type rssResult struct {
	n, failed     int
	before, after int64 // VmRSS bytes
	setupRate     float64
	firstErr      error
}

func (r rssResult) String() string {
	per := float64(r.after-r.before) / float64(max(r.n-r.failed, 1))
	s := fmt.Sprintf("rss: %d live allocations (%d failed, set up at %.0f/s): server VmRSS %.1f MiB (idle %.1f MiB, %.2f KiB per allocation)",
		r.n-r.failed, r.failed, r.setupRate, float64(r.after)/(1<<20), float64(r.before)/(1<<20), per/1024)
	if r.firstErr != nil {
		s += fmt.Sprintf(", first error: %v", r.firstErr)
	}
	return s
}

// holdAllocations sets up n allocations, each on its own socket and user, reads the
// server's VmRSS while they are all live, and then frees them (dealloc) or just drops the
// sockets (when the server is about to be stopped anyway).
func holdAllocations(server *net.UDPAddr, secret string, n, pid int, dealloc bool) (rssResult, error) {
	if pid <= 0 {
		return rssResult{}, fmt.Errorf("rss needs the server's -pid")
	}
	res := rssResult{n: n}
	var err error
	if res.before, err = procRSS(pid); err != nil {
		return res, err
	}
	setup := setupClients(server, secret, n, 64, func(_ int, c *turnClient) error { return c.allocate() })
	res.failed, res.firstErr = setup.failed, setup.firstErr
	res.setupRate = float64(n-setup.failed) / setup.elapsed.Seconds()
	// Let the server's allocator settle (GC, lazily touched pages) before reading.
	time.Sleep(time.Second)
	res.after, err = procRSS(pid)
	closeClients(setup.clients, dealloc)
	return res, err
}
