package turnserver

import (
	"sync/atomic"
	"time"

	"icehub/turnserver/internal/stunwire"
)

// Bitrate caps (turn.max_bitrate per allocation, turn.total_bitrate for the whole server,
// each direction on its own). A datagram over a cap is dropped, never queued, so traffic under
// the cap gets no delay. Every path that relays a datagram charges it once per direction:
//
//   - client to peer: the relay's send (loopRelay.sendToPeer — the loop's ChannelData fast
//     path and pion's Send indications and ChannelData alike — and relayPacketConn.WriteTo);
//     a datagram for one of this server's relays is charged there before it is handed over;
//   - peer to client: the loop's ChannelData fast path (loopListener.Socket, and
//     loopRelay.receiveFromOwnRelay), and for everything pion frames (Data indications,
//     ChannelData of relays outside the loop), the write on the client's transport
//     (loopListener.WriteTo, plainListener.WriteTo, streamConn.Write). pion has checked the
//     permission by then, so datagrams from peers without one — anyone who learned the relay
//     address — are dropped by pion without spending the client's allowance;
//   - RFC 6062 TCP relays carry a byte stream, which cannot lose bytes: they are paced
//     (countingConn), and TCP's flow control slows the sender.
//
// A dropped datagram costs a policy load, one clock read (once per round in the loop) and a
// compare-and-swap: less than relaying it, so a capped flood costs no more CPU than an
// uncapped one.

// capTolerance is the burst a cap lets through at once: half a second of traffic at the cap
// (a video key frame, a pacer's burst). Over a window of T seconds at most (T + 0.5) × cap
// gets through.
const capTolerance = int64(500 * time.Millisecond)

// direction is the way a datagram is relayed; it indexes the buckets and the drop counters.
type direction int

const (
	toPeer direction = iota
	toClient
)

// capLimit says which cap dropped a datagram.
type capLimit int

const (
	capNone       capLimit = iota
	capAllocation          // turn.max_bitrate
	capTotal               // turn.total_bitrate
)

// clockBase is the origin of the caps' clock; time.Time's monotonic reading makes Sub cheap.
var clockBase = time.Now()

// capClock returns t on the caps' clock, in nanoseconds.
func capClock(t time.Time) int64 { return int64(t.Sub(clockBase)) }

// rateBucket is a token bucket kept as GCRA's "theoretical arrival time": one atomic word, no
// lock, no allocation, safe for the loop goroutine and pion's at once. The rate is not stored:
// each take passes the one in force, so a reload changes live allocations' caps at once.
type rateBucket struct{ tat atomic.Int64 }

// cost is how long n bytes take at bps, in nanoseconds.
func cost(n int, bps uint64) int64 { return int64(uint64(n) * 8e9 / bps) }

// take charges n bytes at bps when the bucket holds no more than capTolerance of backlog;
// false: over the cap, nothing charged.
func (b *rateBucket) take(now int64, n int, bps uint64) bool {
	c := cost(n, bps)
	for {
		tat := b.tat.Load()
		t := max(tat, now)
		if t-now > capTolerance {
			return false
		}
		if b.tat.CompareAndSwap(tat, t+c) {
			return true
		}
	}
}

// pace charges n bytes at bps unconditionally and returns how long the caller must wait to
// stay within the cap (0: none).
func (b *rateBucket) pace(now int64, n int, bps uint64) time.Duration {
	c := cost(n, bps)
	for {
		tat := b.tat.Load()
		next := max(tat, now) + c
		if b.tat.CompareAndSwap(tat, next) {
			return time.Duration(max(next-capTolerance-now, 0))
		}
	}
}

// checkCaps charges n bytes relayed for rec in direction d against pol's caps, the
// allocation's first: capNone lets the datagram through.
func (s *Server) checkCaps(pol *policy, rec *relayRecord, d direction, n int, now int64) capLimit {
	if bps := pol.maxBitrate; bps > 0 && !rec.caps[d].take(now, n, bps) {
		return capAllocation
	}
	if bps := pol.totalBitrate; bps > 0 && !s.totalCaps[d].take(now, n, bps) {
		return capTotal
	}
	return capNone
}

// withinCaps is checkCaps for the paths outside the loop: it reads the policy and the clock
// itself and counts a drop at once.
func (s *Server) withinCaps(rec *relayRecord, d direction, n int) bool {
	pol := s.policy.Load()
	if !pol.capsBitrate() {
		return true
	}
	if l := s.checkCaps(pol, rec, d, n, capClock(s.now())); l != capNone {
		s.m.capDropped(d, l, 1, n)
		return false
	}
	return true
}

// paceCaps charges n bytes of an RFC 6062 TCP relay and returns how long to wait.
func (s *Server) paceCaps(rec *relayRecord, d direction, n int) time.Duration {
	pol := s.policy.Load()
	if !pol.capsBitrate() {
		return 0
	}
	now := capClock(s.now())
	var wait time.Duration
	if bps := pol.maxBitrate; bps > 0 {
		wait = rec.caps[d].pace(now, n, bps)
	}
	if bps := pol.totalBitrate; bps > 0 {
		wait = max(wait, s.totalCaps[d].pace(now, n, bps))
	}
	return wait
}

// underBitrateCap reports whether rec's datagrams must all pass through user space, where
// the caps are enforced: a kernel fast path (turn.offload) must not relay for it.
func (s *Server) underBitrateCap(*relayRecord) bool { return s.policy.Load().capsBitrate() }

// relayedToClient returns the relayed bytes in a frame pion writes to a client, and whether
// it is one: ChannelData, or a Data indication (its attributes counted, as pion sent them).
// STUN responses are not relayed data and are never dropped.
func relayedToClient(b []byte) (int, bool) {
	if _, payload, ok := stunwire.ParseChannelData(b); ok {
		return len(payload), true
	}
	if h, ok := stunwire.ParseHeader(b); ok && h.Type == stunwire.MessageType(methodData, stunwire.ClassIndication) {
		return len(b) - stunwire.HeaderLen, true
	}
	return 0, false
}

// methodData is the Data indication's method (RFC 8656 section 17).
const methodData = 0x007

// frameWithinCaps is the peer-to-client check for what pion writes to a client of rec: true
// for anything that is not relayed data, or data within the caps.
func (s *Server) frameWithinCaps(rec *relayRecord, b []byte) bool {
	if rec == nil || !s.policy.Load().capsBitrate() {
		return true
	}
	n, ok := relayedToClient(b)
	return !ok || s.withinCaps(rec, toClient, n)
}
