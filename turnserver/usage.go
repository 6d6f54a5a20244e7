package turnserver

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v4"
)

// AllocationRecord is one allocation's account: who held it, through which addresses, for
// how long, what it carried and why it ended. Config.OnAllocationEnded gets one per ended
// allocation; Allocations lists the live ones (Duration is then the age so far, Reason empty).
type AllocationRecord struct {
	User string // the user part of the TURN REST username
	// Client is the client's address; ClientTransport "udp", "tcp" or "tls" (a TLS listener,
	// the port shared with HTTPS included).
	Client          netip.AddrPort
	ClientTransport string
	// Relay is the advertised relay address (XOR-RELAYED-ADDRESS); RelayTransport "udp", or
	// "tcp" for an RFC 6062 TCP relay.
	Relay          netip.AddrPort
	RelayTransport string
	Start          time.Time
	Duration       time.Duration
	// Payload bytes and packets (TCP reads, for TCP relays) through the relay, each way.
	BytesToPeer, BytesToClient     uint64
	PacketsToPeer, PacketsToClient uint64
	Reason                         string // one of the End* constants
}

// Why an allocation ended. pion's deletion event does not say, so the server infers it from
// what it saw (endReason); the checks run in this order and the first that holds wins.
const (
	// EndShutdown: the server was closing (SIGTERM) and ended it.
	EndShutdown = "shutdown"
	// EndRefresh0: the client deallocated: an authenticated Refresh with LIFETIME 0 for this
	// allocation passed admission just before (refresh0Window).
	EndRefresh0 = "refresh-0"
	// EndClientGone: the client's TCP or TLS connection ended (closed or reset by the
	// client, or cut after authIdle of silence), which ends its allocation with it.
	EndClientGone = "client-gone"
	// EndExpired: none of the above: the lifetime passed without a Refresh. (A relay socket
	// failing on its own would land here too; pion gives no way to tell them apart.)
	EndExpired = "expired"
)

// refresh0Window bounds how long after admission passed a Refresh with LIFETIME 0 the
// allocation's deletion counts as the client's doing. pion handles the request on the same
// goroutine right after admission, so in practice it is microseconds; the window keeps a
// Refresh 0 that pion then refused (stale nonce, address family mismatch) from labelling an
// end that comes later for another reason.
const refresh0Window = 2 * time.Second

// endReason infers why the allocation of r ended (see the End* constants).
func (s *Server) endReason(r *relayRecord) string {
	r0 := r.refresh0.Load()
	switch {
	case s.closing.Load():
		return EndShutdown
	case r0 != 0 && s.now().Sub(time.Unix(0, r0)) < refresh0Window:
		return EndRefresh0
	case r.clientGone.Load():
		return EndClientGone
	default:
		return EndExpired
	}
}

// record returns r's account as of now. The caller holds relaySet.mu or has detached r.
func (r *relayRecord) record(now time.Time) AllocationRecord {
	tr := r.clientTr
	if r.clientTLS {
		tr = "tls"
	}
	return AllocationRecord{
		User: r.user, Client: addrPortOf(r.client), ClientTransport: tr,
		Relay: r.advertised, RelayTransport: r.network,
		Start: r.start, Duration: now.Sub(r.start),
		BytesToPeer: r.bytesToPeer.Load(), BytesToClient: r.bytesToClient.Load(),
		PacketsToPeer: r.pktsToPeer.Load(), PacketsToClient: r.pktsToClient.Load(),
	}
}

// reportEnded hands the account of a deleted allocation to Config.OnAllocationEnded.
func (s *Server) reportEnded(r *relayRecord) {
	if s.onEnded == nil {
		return
	}
	rec := r.record(s.now())
	rec.Reason = s.endReason(r)
	s.onEnded(rec)
}

// Allocations lists the live allocations with their counters so far, in no order.
func (s *Server) Allocations() []AllocationRecord {
	now := s.now()
	s.relays.mu.RLock()
	defer s.relays.mu.RUnlock()
	out := make([]AllocationRecord, 0, len(s.relays.byTuple))
	for _, r := range s.relays.byTuple {
		out = append(out, r.record(now))
	}
	return out
}

// noteRefresh0 marks the allocation of src on the listener at local when msg, an
// authenticated Refresh admission is passing to pion, has LIFETIME 0: pion reads the
// attribute the same way (first one, 4 bytes) and deletes the allocation for it.
func (s *Server) noteRefresh0(msg *stun.Message, src net.Addr, r replier) {
	if s.onEnded == nil {
		return // nobody reads end reasons
	}
	v, err := msg.Get(stun.AttrLifetime)
	if err != nil || len(v) != 4 || binary.BigEndian.Uint32(v) != 0 {
		return
	}
	la, ok := r.(interface{ LocalAddr() net.Addr })
	if !ok {
		return
	}
	if rec := s.relays.lookupTuple(src, la.LocalAddr()); rec != nil {
		rec.refresh0.Store(s.now().UnixNano())
	}
}

// noteClientGone marks the allocation of a TCP/TLS client whose connection ended; pion
// deletes it as soon as its read loop sees the same error.
func (s *Server) noteClientGone(src, local net.Addr) {
	if rec := s.relays.lookupTuple(src, local); rec != nil {
		rec.clientGone.Store(true)
	}
}
