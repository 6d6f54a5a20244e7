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
	// Bitrate caps in bits per second, 0: none (bitrate.go).
	maxBitrate, totalBitrate uint64
	stunOnly                 bool
	alt4, alt6               []netip.AddrPort // alternate servers by address family
}

// capsBitrate reports whether a bitrate cap is in force: every relayed datagram must then be
// seen in user space, so nothing may bypass it (a kernel fast path must not take it).
func (p *policy) capsBitrate() bool { return p.maxBitrate > 0 || p.totalBitrate > 0 }

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
		maxBitrate:      s.MaxBitrate,
		totalBitrate:    s.TotalBitrate,
		stunOnly:        s.STUNOnly,
	}
	for _, ap := range s.AlternateServers {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if ap.Addr().Is4() {
			p.alt4 = append(p.alt4, ap)
		} else {
			p.alt6 = append(p.alt6, ap)
		}
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
