package turnserver

import (
	"net"
	"net/netip"
	"sync"
)

// quotas counts live relay allocations per user and in total (as relays are opened and
// closed) and per client IP (as pion's allocation events say).
type quotas struct {
	mu      sync.Mutex
	total   int
	perUser map[string]int
	perIP   map[netip.Addr]int
}

func newQuotas() *quotas {
	return &quotas{perUser: make(map[string]int), perIP: make(map[netip.Addr]int)}
}

func (q *quotas) ipCount(ip netip.Addr) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.perIP[ip]
}

// addIP counts an allocation of a client at ip (delta 1) or its end (-1).
func (q *quotas) addIP(ip netip.Addr, delta int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.perIP[ip] += delta; q.perIP[ip] <= 0 {
		delete(q.perIP, ip)
	}
}

func (q *quotas) userCount(user string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.perUser[user]
}

func (q *quotas) totalCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.total
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

// reserveRelay counts an allocation for user against the total quota.
func (s *Server) reserveRelay(user string) error {
	if s.draining.Load() {
		// Admitted just before Drain: pion answers 508.
		return ErrCapacity
	}
	maxTotal := s.policy.Load().maxTotal
	if !s.quotas.reserve(user, maxTotal) {
		s.m.quota.WithLabelValues("total").Inc()
		s.log.Info("turn allocation refused: total quota", "user", user, "max_allocations", maxTotal)
		return ErrCapacity
	}
	return nil
}

// releaseRelay returns a relay's quota and drops it from the live set, once.
func (s *Server) releaseRelay(r *relayRecord) {
	r.released.Do(func() {
		s.relays.remove(r)
		s.quotas.release(r.user)
	})
}

// quotaHandler implements turn.QuotaHandler: 486 when a user, or a client IP, has too many
// allocations. (Allocations of one IP are counted as pion reports them created; concurrent
// Allocates from one IP over several TCP connections can overshoot by a few.)
func (s *Server) quotaHandler(userID, _ string, src net.Addr) bool {
	pol := s.policy.Load()
	if max := pol.maxUser; max > 0 && s.quotas.userCount(userID) >= max {
		s.m.quota.WithLabelValues("user").Inc()
		s.log.Info("turn allocation refused: user quota", "user", userID, "client", src.String(), "max_allocations_per_user", max)
		return false
	}
	if max := pol.maxPerIP; max > 0 && s.quotas.ipCount(addrPortOf(src).Addr()) >= max {
		s.m.quota.WithLabelValues("ip").Inc()
		if s.sourceLog.allow(addrPortOf(src).Addr(), s.now()) {
			s.log.Info("turn allocation refused: per-IP quota", "user", userID, "client", src.String(), "max_allocations_per_ip", max)
		}
		return false
	}
	return true
}
