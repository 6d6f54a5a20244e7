package turnserver

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxTracked bounds the per-source maps so spoofed sources cannot grow memory without limit.
const maxTracked = 1 << 16

// sourceLimiter rate-limits unauthenticated requests per source IP. A zero rate disables it.
type sourceLimiter struct {
	limit rate.Limit
	burst int

	mu  sync.Mutex
	src map[netip.Addr]*limiterEntry
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newSourceLimiter(perSec float64, burst int) *sourceLimiter {
	if burst < 1 {
		burst = 1
	}
	return &sourceLimiter{limit: rate.Limit(perSec), burst: burst, src: make(map[netip.Addr]*limiterEntry)}
}

// allow reports whether one more unauthenticated request from ip may be processed.
func (l *sourceLimiter) allow(ip netip.Addr, now time.Time) bool {
	if l.limit <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.src[ip]
	if e == nil {
		if len(l.src) >= maxTracked {
			l.evict(now)
		}
		e = &limiterEntry{lim: rate.NewLimiter(l.limit, l.burst)}
		l.src[ip] = e
	}
	e.seen = now
	return e.lim.AllowN(now, 1)
}

// evict drops sources idle long enough for their bucket to be full again; if that frees
// nothing (a flood of distinct sources), it drops an arbitrary half: failing open for a few
// sources beats refusing every new client.
func (l *sourceLimiter) evict(now time.Time) {
	idle := time.Duration(float64(l.burst)/float64(l.limit)*float64(time.Second)) + time.Second
	for ip, e := range l.src {
		if now.Sub(e.seen) > idle {
			delete(l.src, ip)
		}
	}
	for ip := range l.src {
		if len(l.src) < maxTracked/2 {
			break
		}
		delete(l.src, ip)
	}
}

// keyCacheTTL bounds how long a verified key waits for pion's AuthHandler call, which
// normally follows within microseconds on the same goroutine.
const keyCacheTTL = 5 * time.Second

// keyCache hands the MESSAGE-INTEGRITY key the gate verified to the AuthHandler for the
// same source and username. It lets any configured secret verify although pion's
// AuthHandler can return only one key.
type keyCache struct {
	mu sync.Mutex
	m  map[string]cachedKey
}

type cachedKey struct {
	user    string
	key     []byte
	expires time.Time
}

func newKeyCache() *keyCache { return &keyCache{m: make(map[string]cachedKey)} }

func cacheID(src, username string) string { return src + "\x00" + username }

func (c *keyCache) put(id string, k cachedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxTracked {
		now := time.Now()
		for id, v := range c.m {
			if now.After(v.expires) {
				delete(c.m, id)
			}
		}
		if len(c.m) >= maxTracked {
			clear(c.m)
		}
	}
	c.m[id] = k
}

// take returns and forgets the key for id; one verification serves one request.
func (c *keyCache) take(id string, now time.Time) (cachedKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.m[id]
	if ok {
		delete(c.m, id)
	}
	if !ok || now.After(k.expires) {
		return cachedKey{}, false
	}
	return k, true
}

// quotas counts live relay allocations per user and in total.
type quotas struct {
	mu      sync.Mutex
	total   int
	perUser map[string]int
}

func newQuotas() *quotas { return &quotas{perUser: make(map[string]int)} }

func (q *quotas) userCount(user string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.perUser[user]
}

// reserve counts one more allocation unless the total limit (0 = none) is reached.
func (q *quotas) reserve(user string, maxTotal int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if maxTotal > 0 && q.total >= maxTotal {
		return false
	}
	q.total++
	q.perUser[user]++
	return true
}

func (q *quotas) release(user string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.total--
	if q.perUser[user]--; q.perUser[user] <= 0 {
		delete(q.perUser, user)
	}
}
