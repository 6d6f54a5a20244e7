package turnserver

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v4"

	"icehub/auth"
	"icehub/internal/ratelimit"
	"icehub/turnserver/internal/stunwire"
)

// admission checks every client message before pion sees it, and every answer pion sends
// without authentication on its way out. It
//   - answers unauthenticated and failed requests only within a byte credit the source earns
//     by what it sends (ratelimit.Credit): a spoofed flood "from" a victim gets the victim at
//     most as many bytes as the flood carried, and never locks it out, because requests that
//     verify are never dropped;
//   - binds nonces to the client's IP (nonce.go) and checks them before any HMAC, so spoofed
//     authenticated requests cost nothing and cannot charge allocations to their victim;
//   - caps MESSAGE-INTEGRITY checks per source IP (policy.integrity);
//   - verifies MESSAGE-INTEGRITY against all secrets (pion's AuthHandler can return only one
//     key) and hands pion only requests that verified: pion never sees a forged one;
//   - answers the refusals pion would answer with the wrong code or not at all (442, 400, 440
//     on Allocate, 403 on ChannelBind, 420 on Binding), and those of the operator's controls
//     (redirect.go): 403 to an authenticated Allocate when STUN only, 300 Try Alternate or
//     508 when full or draining.
type admission struct {
	s      *Server
	gen    *relayAddresses
	stream bool // client transport is TCP (or TLS)
	credit *ratelimit.Credit
}

// replier sends a response on the transport the request came in on, as it is: admission's
// own answers bypass the outgoing rewrite.
type replier interface {
	// scratch returns an empty buffer (capacity ≥ answerMax) to build an answer in; it is
	// valid until reply.
	scratch() []byte
	reply(b []byte, to net.Addr)
}

// answerMax bounds what admission builds itself: a challenge with a realm of up to 128
// bytes, an authenticated refusal, a 420.
const answerMax = 256

// authNotifier is a replier that wants to know when one of its requests authenticated.
type authNotifier interface {
	authenticated()
}

func (s *Server) newAdmission(gen *relayAddresses, stream bool) *admission {
	pol := s.policy.Load()
	a := &admission{s: s, gen: gen, stream: stream, credit: ratelimit.NewCredit(pol.answerAllowance, pol.answerRefill)}
	s.creditsMu.Lock()
	s.credits = append(s.credits, a.credit)
	s.creditsMu.Unlock()
	return a
}

// admit returns the bytes pion should process (b itself, or b re-signed with pion's nonce),
// or false when the message was dropped or answered here.
func (a *admission) admit(b []byte, src net.Addr, r replier) ([]byte, bool) {
	if stunwire.IsChannelData(b) {
		return b, true // the data path: pion looks the channel up, nothing to check here
	}
	h, ok := stunwire.ParseHeader(b)
	if !ok {
		return nil, false
	}
	switch h.Class() {
	case stunwire.ClassIndication:
		return b, true // Send indications: pion relays them only for an allocation and permission
	case stunwire.ClassRequest:
	default:
		return nil, false // responses and errors are not for a server
	}
	ip := addrPortOf(src).Addr()
	now := a.s.now()
	info := stunwire.Summarize(b, h)
	if h.Method() == stunwire.MethodBinding {
		return a.binding(b, h, info, src, ip, now, r)
	}
	if !info.HasIntegrity || len(info.Username) == 0 {
		// No credentials: pion answers 401 (with a nonce for this address, see outgoing).
		if !a.credit.Spend(addrPortOf(src), now, len(b), a.s.challengeLen) {
			a.s.m.unauthDrop.Inc()
			return nil, false
		}
		return b, true
	}
	if !a.s.nonces.valid(info.Nonce, ip, now) {
		// Stale, pion's own, or minted for another address (a spoofer's): no HMAC work.
		a.challenge(b, src, ip, now, r, stun.CodeStaleNonce)
		return nil, false
	}
	if !a.s.policy.Load().integrity.Allow(ip, now) {
		a.s.m.integrityDrop.Inc()
		return nil, false
	}
	a.s.m.integrityChecks.Inc()
	msg, key, user, ok := a.verify(b, info.Username, now)
	if !ok {
		a.s.authFailed(src, string(info.Username), h.Method(), now)
		a.challenge(b, src, ip, now, r, stun.CodeUnauthorized)
		return nil, false
	}
	code, refuse := a.refusal(msg, h.Method(), info, src)
	var answer stun.Setter = code
	var alt *stun.AlternateServer
	if !refuse && h.Method() == stunwire.MethodAllocate {
		answer, alt, refuse = a.allocateRefusal(src, r, user, now)
	}
	if refuse {
		setters := []stun.Setter{stun.NewTransactionIDSetter(msg.TransactionID),
			stun.NewType(msg.Type.Method, stun.ClassErrorResponse), answer}
		if alt != nil {
			setters = append(setters, alt)
		}
		// An answer to an authenticated request carries MESSAGE-INTEGRITY (RFC 8489
		// section 10 asks it of ALTERNATE-SERVER): no third party can forge a redirect.
		setters = append(setters, stun.MessageIntegrity(key), stun.Fingerprint)
		if resp, err := stun.Build(setters...); err == nil && len(resp.Raw) <= answerMax {
			r.reply(resp.Raw, src)
		}
		return nil, false
	}
	pionNonce, fresh := a.s.nonces.pionNonce(now)
	if !fresh {
		// No nonce of pion's known yet (or too old): pion answers 438 with one, which
		// outgoing learns and swaps for this address's; the client then retries.
		return b, true
	}
	out, err := resign(msg, pionNonce, key)
	if err != nil {
		return nil, false
	}
	a.s.handoff.put(handoffID(src, string(info.Username)),
		handedKey{user: user, key: key, expires: now.Add(handoffTTL)})
	if h.Method() == stunwire.MethodRefresh {
		a.s.noteRefresh0(msg, src, r)
	}
	if n, ok := r.(authNotifier); ok {
		n.authenticated()
	}
	return out, true
}

// binding admits a Binding request within the source's credit, answering 420 itself when it
// carries an unknown comprehension-required attribute (pion would log each at WARN).
func (a *admission) binding(b []byte, h stunwire.Header, info stunwire.Summary, src net.Addr, ip netip.Addr, now time.Time, r replier) ([]byte, bool) {
	if info.UnknownRequired {
		resp, err := unknownAttributes(b, h)
		if err == nil && len(resp) <= answerMax && a.credit.Spend(addrPortOf(src), now, len(b), len(resp)) {
			r.reply(resp, src)
		}
		return nil, false
	}
	if !a.credit.Spend(addrPortOf(src), now, len(b), bindingAnswerLen(ip)) {
		a.s.m.unauthDrop.Inc()
		return nil, false
	}
	a.s.m.bindings.Inc()
	return b, true
}

// bindingAnswerLen is the size of a Binding success: XOR-MAPPED-ADDRESS and FINGERPRINT.
func bindingAnswerLen(ip netip.Addr) int {
	if ip.Unmap().Is4() {
		return stunwire.HeaderLen + 12 + 8
	}
	return stunwire.HeaderLen + 24 + 8
}

// challenge answers a request that did not authenticate with 401 or 438, a nonce for the
// source's address and the realm, within the source's credit. Under a spoofed flood this is
// what most of the flood gets, so it is built by hand, without allocating.
func (a *admission) challenge(req []byte, src net.Addr, ip netip.Addr, now time.Time, r replier, code stun.ErrorCode) {
	reason := stunwire.ReasonUnauthorized
	if code == stun.CodeStaleNonce {
		reason = stunwire.ReasonStaleNonce
	}
	if !a.credit.Spend(addrPortOf(src), now, len(req), a.s.challengeLen) {
		a.s.m.unauthDrop.Inc()
		return
	}
	r.reply(stunwire.AppendChallenge(r.scratch(), req, int(code), reason, a.s.nonces.mint(ip, now), a.s.realm), src)
}

// outgoing rewrites what pion sends a client before it leaves: a 401 or 438 gets a nonce
// minted for the client's address instead of pion's, which is remembered for resign.
// Everything else passes unchanged.
func (a *admission) outgoing(b []byte, dst net.Addr) []byte {
	h, ok := stunwire.ParseHeader(b)
	if !ok || h.Class() != stunwire.ClassError {
		return b
	}
	info := stunwire.Summarize(b, h)
	if info.HasIntegrity || info.Nonce == nil {
		return b
	}
	now := a.s.now()
	a.s.nonces.notePion(string(info.Nonce), now)
	reason := stunwire.ReasonUnauthorized
	switch info.ErrorCode {
	case 401:
	case 438:
		reason = stunwire.ReasonStaleNonce
	default:
		out, err := replaceNonce(b, a.s.nonces.mint(addrPortOf(dst).Addr(), now))
		if err != nil {
			return b
		}
		return out
	}
	// pion's 401 and 438 carry ERROR-CODE, NONCE and REALM: the same challenge admission
	// sends, built without decoding pion's.
	return stunwire.AppendChallenge(make([]byte, 0, a.s.challengeLen), b, info.ErrorCode, reason,
		a.s.nonces.mint(addrPortOf(dst).Addr(), now), a.s.realm)
}

// verify finds the secret whose key checks the message's MESSAGE-INTEGRITY.
func (a *admission) verify(b, username []byte, now time.Time) (*stun.Message, []byte, string, bool) {
	e, ok := a.s.keys.get(a.s.ring, a.s.realm, string(username), now)
	if !ok {
		return nil, nil, "", false
	}
	msg := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := msg.Decode(); err != nil {
		return nil, nil, "", false
	}
	for _, key := range e.keys {
		if stun.MessageIntegrity(key).Check(msg) == nil {
			a.s.keys.remember(string(username), e)
			return msg, key, e.user, true
		}
	}
	return nil, nil, "", false
}

// authFailed counts and (within the per-source log limit) logs a request whose credentials
// did not verify. The username is public (expiry and user name); passwords never appear.
func (s *Server) authFailed(src net.Addr, username string, method uint16, now time.Time) {
	reason := "bad_signature"
	_, _, err := s.ring.Passwords(username)
	switch {
	case errors.Is(err, auth.ErrExpired):
		reason = "expired"
	case err != nil:
		reason = "malformed"
	}
	s.m.authFail.WithLabelValues(reason).Inc()
	if s.sourceLog.allow(addrPortOf(src).Addr(), now) {
		s.log.Info("turn auth failed", "client", src.String(), "username", username,
			"method", stun.Method(method).String(), "reason", reason)
	}
}

// refusal returns the error code for an authenticated request this server refuses itself.
func (a *admission) refusal(msg *stun.Message, method uint16, info stunwire.Summary, src net.Addr) (stun.ErrorCode, bool) {
	switch method {
	case stunwire.MethodAllocate:
		if info.Transport == 6 { // TCP, RFC 6062
			if !a.stream {
				return stun.CodeBadRequest, true // RFC 6062 section 5.1: TCP relays need a TCP client
			}
			if !a.s.policy.Load().tcpRelay {
				return stun.CodeUnsupportedTransProto, true
			}
		}
		if (info.Family == 1 && a.gen.v4 == nil) || (info.Family == 2 && a.gen.v6 == nil) {
			return stun.CodeAddrFamilyNotSupported, true
		}
	case stunwire.MethodChanBind:
		// pion refuses a filtered ChannelBind with 401, which clients take for bad
		// credentials; the filter's answer is 403 like for CreatePermission.
		var peer stun.XORMappedAddress
		if err := peer.GetFromAs(msg, stun.AttrXORPeerAddress); err != nil {
			return 0, false
		}
		ip, ok := netip.AddrFromSlice(peer.IP)
		if !ok {
			return 0, false
		}
		if allowed, name := a.s.permit(ip.Unmap()); !allowed {
			a.s.refusePeer(src, ip.Unmap(), name, "channel-bind")
			return stun.CodeForbidden, true
		}
	}
	return 0, false
}
