package turnserver

import "icehub/internal/ratelimit"

// policy is Settings built for use: what every request and relayed packet is checked
// against. It is immutable and swapped whole by a reload, so readers load it atomically
// and a reload never stops traffic.
type policy struct {
	filter   *PeerFilter
	maxUser  int
	maxTotal int
	tcpRelay bool
	unauth   *ratelimit.PerAddr
	rate     float64
	burst    int
}

func newPolicy(s Settings, old *policy) *policy {
	p := &policy{
		filter:   NewPeerFilter(s.AllowPeers, s.DenyPeers),
		maxUser:  s.MaxAllocationsPerUser,
		maxTotal: s.MaxAllocations,
		tcpRelay: s.TCPRelay,
		rate:     s.UnauthRate,
		burst:    s.UnauthBurst,
	}
	if old != nil && old.rate == p.rate && old.burst == p.burst {
		p.unauth = old.unauth // keep the buckets: a reload is no reason to forgive a flood
	} else {
		p.unauth = ratelimit.New(p.rate, p.burst)
	}
	return p
}
