package turnserver

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// relayRecord is one relay socket: where it is bound, what it is advertised as, whose it is
// and how much it carried. The allocation log line and the own-relay exception read it.
type relayRecord struct {
	network          string // "udp" or "tcp"
	advertised, bind netip.AddrPort
	user             string
	// owner is the UDP listener socket whose client allocated this UDP relay, and conn the
	// relay socket it opened; both nil for relays of stream clients and TCP relays.
	owner udpListener
	conn  net.PacketConn

	// Set by the allocation-created event; guarded by relaySet.mu.
	client   net.Addr
	clientTr string
	start    time.Time
	// clientTLS: the client came through a TLS listener. refresh0 (unix ns) and clientGone
	// are what the usage record's end reason is inferred from (usage.go).
	clientTLS  bool
	refresh0   atomic.Int64
	clientGone atomic.Bool

	bytesToPeer, bytesToClient atomic.Uint64
	pktsToPeer, pktsToClient   atomic.Uint64
	released                   sync.Once
	caps                       [2]rateBucket // turn.max_bitrate, by direction (bitrate.go)
}

func (r *relayRecord) countToPeer(m *metrics, n int) {
	r.bytesToPeer.Add(uint64(n))
	r.pktsToPeer.Add(1)
	m.byteToPeer.Add(float64(n))
	m.pktToPeer.Inc()
}

func (r *relayRecord) countToClient(m *metrics, n int) {
	r.bytesToClient.Add(uint64(n))
	r.pktsToClient.Add(1)
	m.byteToClient.Add(float64(n))
	m.pktToClient.Inc()
}

func advKey(network string, ap netip.AddrPort) string { return network + "|" + ap.String() }

// relaySet tracks the live relay sockets of all listeners, by advertised address and by the
// client 5-tuple of their allocation.
type relaySet struct {
	mu      sync.RWMutex
	byAdv   map[string]*relayRecord
	byTuple map[string]*relayRecord
	ips     map[netip.Addr]int
	addrs   map[relayAddrKey]int // per transport: a UDP relay's port opens nothing on TCP
	tcpBind map[netip.AddrPort]bool
	// gen changes whenever the set does, so per-socket decision caches know to re-check.
	gen atomic.Uint64
}

func newRelaySet() *relaySet {
	return &relaySet{
		byAdv:   make(map[string]*relayRecord),
		byTuple: make(map[string]*relayRecord),
		ips:     make(map[netip.Addr]int),
		addrs:   make(map[relayAddrKey]int),
		tcpBind: make(map[netip.AddrPort]bool),
	}
}

func (s *relaySet) add(r *relayRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byAdv[advKey(r.network, r.advertised)] = r
	for _, ap := range uniqueAddrPorts(r.advertised, r.bind) {
		s.ips[ap.Addr()]++
		s.addrs[relayAddrKey{r.network, ap}]++
	}
	if r.network == "tcp" {
		s.tcpBind[r.bind] = true
	}
	s.gen.Add(1)
}

func (s *relaySet) remove(r *relayRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byAdv[advKey(r.network, r.advertised)] == r {
		delete(s.byAdv, advKey(r.network, r.advertised))
	}
	for _, ap := range uniqueAddrPorts(r.advertised, r.bind) {
		if s.ips[ap.Addr()]--; s.ips[ap.Addr()] <= 0 {
			delete(s.ips, ap.Addr())
		}
		k := relayAddrKey{r.network, ap}
		if s.addrs[k]--; s.addrs[k] <= 0 {
			delete(s.addrs, k)
		}
	}
	if r.network == "tcp" {
		delete(s.tcpBind, r.bind)
	}
	s.gen.Add(1)
}

// uniqueAddrPorts lists the addresses a relay is reachable at: advertised and, when bound
// to a specific IP, bound.
func uniqueAddrPorts(advertised, bind netip.AddrPort) []netip.AddrPort {
	if !bind.Addr().IsUnspecified() && bind != advertised {
		return []netip.AddrPort{advertised, bind}
	}
	return []netip.AddrPort{advertised}
}

func (s *relaySet) hasIP(ip netip.Addr) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ips[ip.Unmap()] > 0
}

// relayAddrKey is a relay address on one transport ("udp" or "tcp").
type relayAddrKey struct {
	network string
	ap      netip.AddrPort
}

func (s *relaySet) hasAddr(network string, ap netip.AddrPort) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.addrs[relayAddrKey{network, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}] > 0
}

func (s *relaySet) tcpBound(ap netip.AddrPort) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.tcpBind[ap]
}

// byAdvertised returns the live relay advertised at ap on network, or nil.
func (s *relaySet) byAdvertised(network string, ap netip.AddrPort) *relayRecord {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byAdv[advKey(network, ap)]
}

func (s *relaySet) lookupAdvertised(network string, a net.Addr) *relayRecord {
	ap := addrPortOf(a)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byAdv[advKey(network, ap)]
}

func tupleKey(src, dst net.Addr) string {
	return src.Network() + "|" + src.String() + "|" + dst.String()
}

// attach binds a relay to the allocation (client 5-tuple) pion just created with it.
func (s *relaySet) attach(src, dst, relay net.Addr, now time.Time) *relayRecord {
	network := "udp"
	if _, ok := relay.(*net.TCPAddr); ok {
		network = "tcp"
	}
	ap := addrPortOf(relay)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.byAdv[advKey(network, ap)]
	if r == nil {
		return nil
	}
	r.client, r.clientTr, r.start = src, src.Network(), now
	s.byTuple[tupleKey(src, dst)] = r
	return r
}

// lookupTuple returns the relay of the allocation of client 5-tuple src → dst, or nil.
func (s *relaySet) lookupTuple(src, dst net.Addr) *relayRecord {
	k := tupleKey(src, dst)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byTuple[k]
}

// detach forgets and returns the relay of a deleted allocation.
func (s *relaySet) detach(src, dst net.Addr) *relayRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := tupleKey(src, dst)
	r := s.byTuple[k]
	delete(s.byTuple, k)
	return r
}
