package turnserver

import (
	"net/netip"
	"slices"
	"time"

	"icehub/internal/ratelimit"
)

// policy is Settings built for use: what every request and relayed packet is checked
// against. It is immutable and swapped whole by a reload, so readers load it atomically
// and a reload never stops traffic.
type policy struct {
	filter          *PeerFilter
	maxUser         int
	maxTotal        int
	maxPerIP        int
	tcpRelay        bool
	answerAllowance float64
	answerRefill    float64
	integrity       *ratelimit.PerAddr
	maxConnsPerIP   int
	allocateTimeout time.Duration
	proxyFrom       []netip.Prefix
}

func newPolicy(s Settings, old *policy) *policy {
	p := &policy{
		filter:          NewPeerFilter(s.AllowPeers, s.DenyPeers),
		maxUser:         s.MaxAllocationsPerUser,
		maxTotal:        s.MaxAllocations,
		maxPerIP:        s.MaxAllocationsPerIP,
		tcpRelay:        s.TCPRelay,
		answerAllowance: s.AnswerAllowance,
		answerRefill:    s.AnswerRefill,
		maxConnsPerIP:   s.MaxConnsPerIP,
		allocateTimeout: s.AllocateTimeout,
		proxyFrom:       slices.Clone(s.ProxyFrom),
	}
	if old != nil {
		// Keep the buckets: a reload is no reason to forgive a flood. Their new rate is set
		// when the reload commits (Server.PrepareReload).
		p.integrity = old.integrity
	} else {
		p.integrity = ratelimit.New(s.IntegrityRate, s.IntegrityBurst)
	}
	return p
}
