package turnserver

import (
	"net"
	"time"

	"github.com/pion/stun/v4"
)

// The operator's controls over who gets an allocation here, answered by admission to an
// Allocate that authenticated (RFC 8656 section 7.2 checks credentials first; an
// unauthenticated Allocate gets its 401 like any other request, so none of this is told to
// anyone without credentials, and spoofed requests never get this far, nonces being bound
// to the client's address):
//
//   - turn.stun_only: 403 "STUN only". 403 is RFC 8656's "administratively prohibited":
//     clients give the server up for relaying (libwebrtc fails the TURN candidate, pion's
//     client returns the error) instead of retrying later, as they may after 508.
//   - full (turn.max_allocations reached) or draining (Drain): 300 Try Alternate naming one of
//     turn.alternate_servers of the client's address family, round-robin, or 508 Insufficient
//     Capacity when there is none (or the client is on TLS, whose port ALTERNATE-SERVER cannot
//     name). An Allocate that pion already answered for this 5-tuple (a retransmission) is
//     left to pion, which repeats its answer.
//
// Every answer carries MESSAGE-INTEGRITY: only the holder of the credentials can be
// redirected, and nobody can forge a redirect for them (RFC 8489 section 10).

// stunOnlyReason is the reason phrase of the STUN-only refusal.
const stunOnlyReason = "STUN only: this server relays nothing"

// allocateRefusal decides the answer to an authenticated Allocate of user from src: refuse
// is false when pion may go on.
func (a *admission) allocateRefusal(src net.Addr, r replier, user string, now time.Time) (code stun.Setter, alt *stun.AlternateServer, refuse bool) {
	s := a.s
	pol := s.policy.Load()
	if pol.stunOnly {
		s.m.stunOnly.Inc()
		return stun.ErrorCodeAttribute{Code: stun.CodeForbidden, Reason: []byte(stunOnlyReason)}, nil, true
	}
	reason := "draining"
	if !s.draining.Load() {
		if pol.maxTotal <= 0 || s.quotas.totalCount() < pol.maxTotal {
			return nil, nil, false
		}
		reason = "full"
	}
	if la, ok := r.(interface{ LocalAddr() net.Addr }); ok && s.relays.lookupTuple(src, la.LocalAddr()) != nil {
		return nil, nil, false // a retransmission of an Allocate pion answered: pion repeats it
	}
	alts := pol.alt6
	if addrPortOf(src).Addr().Is4() {
		alts = pol.alt4
	}
	answer, ec := "capacity", stun.CodeInsufficientCapacity
	args := []any{"user", user, "client", src.String(), "reason", reason}
	if len(alts) > 0 && (a.gen == nil || !a.gen.tls) {
		ap := alts[(s.altNext.Add(1)-1)%uint64(len(alts))]
		alt = &stun.AlternateServer{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
		answer, ec = "alternate", stun.CodeTryAlternate
		args = append(args, "alternate", ap.String())
	}
	s.m.alternate.WithLabelValues(reason, answer).Inc()
	if s.sourceLog.allow(addrPortOf(src).Addr(), now) {
		s.log.Info("turn allocation redirected", append(args, "code", int(ec))...)
	}
	return ec, alt, true
}

// Drain stops taking allocations: from now on Allocate gets 300 Try Alternate (or 508), and
// the live allocations relay on until they end or Close. It cannot be undone; main calls it
// on SIGTERM when server.drain_timeout is set.
func (s *Server) Drain() {
	if !s.draining.Swap(true) {
		s.log.Info("turn draining: new allocations go elsewhere", "allocations", s.AllocationCount())
	}
}
