// Package ratelimit keeps one token bucket (golang.org/x/time/rate) per client address, with
// memory bounded however many addresses send: TURN and the signaling hub both use it for
// their per-address limits.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// MaxTracked bounds how many addresses a PerAddr remembers, so spoofed sources cannot grow
// memory without limit.
const MaxTracked = 1 << 16

// PerAddr rate-limits events per address. A limit of 0 or below (or rate.Inf) allows
// everything. It is safe for concurrent use.
type PerAddr struct {
	mu    sync.Mutex
	limit rate.Limit
	burst int
	m     map[netip.Addr]*entry
}

type entry struct {
	lim  *rate.Limiter
	seen time.Time
}

// New returns a limiter of perSec events per second with bursts of burst (at least 1).
func New(perSec float64, burst int) *PerAddr {
	l := &PerAddr{m: make(map[netip.Addr]*entry)}
	l.SetLimit(perSec, burst)
	return l
}

// SetLimit changes the rate and burst, for addresses already tracked too.
func (l *PerAddr) SetLimit(perSec float64, burst int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limit, l.burst = rate.Limit(perSec), max(burst, 1)
	for _, e := range l.m {
		e.lim.SetLimitAt(time.Now(), l.limit)
		e.lim.SetBurstAt(time.Now(), l.burst)
	}
}

func (l *PerAddr) unlimited() bool { return l.limit <= 0 || l.limit == rate.Inf }

// Allow reports whether one more event from ip may happen now, and spends its token.
func (l *PerAddr) Allow(ip netip.Addr, now time.Time) bool {
	return l.AllowN(ip, now, 1)
}

// AllowN is Allow for n events at once.
func (l *PerAddr) AllowN(ip netip.Addr, now time.Time, n int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unlimited() {
		return true
	}
	e := l.m[ip]
	if e == nil {
		if len(l.m) >= MaxTracked {
			l.evict(now)
		}
		e = &entry{lim: rate.NewLimiter(l.limit, l.burst)}
		l.m[ip] = e
	}
	e.seen = now
	return e.lim.AllowN(now, n)
}

// evict drops addresses idle long enough for their bucket to be full again; if that frees
// nothing (a flood of distinct sources), it drops an arbitrary half: failing open for a few
// sources beats refusing every new client.
func (l *PerAddr) evict(now time.Time) {
	idle := time.Duration(float64(l.burst)/float64(l.limit)*float64(time.Second)) + time.Second
	for ip, e := range l.m {
		if now.Sub(e.seen) > idle {
			delete(l.m, ip)
		}
	}
	for ip := range l.m {
		if len(l.m) < MaxTracked/2 {
			break
		}
		delete(l.m, ip)
	}
}

// Len is how many addresses are tracked.
func (l *PerAddr) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
