package turnserver

import (
	"net"
	"net/netip"

	"github.com/pion/stun/v4"

	"icehub/turnserver/internal/stunwire"
)

// admission checks every client message before pion sees it. It verifies MESSAGE-INTEGRITY
// against all secrets (pion's AuthHandler can return only one key), rate-limits
// unauthenticated requests per source, and answers the few refusals pion would answer with
// the wrong code (442/400/440 on Allocate, 403 on ChannelBind).
type admission struct {
	s      *Server
	gen    *relayAddresses
	stream bool // client transport is TCP (or TLS)
}

// replier sends a response on the transport the request came in on.
type replier interface {
	reply(b []byte, to net.Addr)
}

// authNotifier is a replier that wants to know when one of its requests authenticated.
type authNotifier interface {
	authenticated()
}

// admit returns true when pion should process b, false when it was dropped or answered.
func (a *admission) admit(b []byte, src net.Addr, r replier) bool {
	if stunwire.IsChannelData(b) {
		return true // the data path: pion looks the channel up, nothing to check here
	}
	h, ok := stunwire.ParseHeader(b)
	if !ok {
		return false
	}
	switch h.Class() {
	case stunwire.ClassIndication:
		return true // Send indications: pion relays them only for an allocation and permission
	case stunwire.ClassRequest:
	default:
		return false // responses and errors are not for a server
	}
	if h.Method() == stunwire.MethodBinding {
		a.s.m.bindings.Inc()
		return true
	}
	info := stunwire.Summarize(b, h)
	if !info.HasIntegrity || len(info.Username) == 0 {
		return a.allowUnauth(src)
	}
	msg, key, user, ok := a.verify(b, info.Username)
	if !ok {
		// pion answers 401 and the AuthHandler counts why; a wrong key is as unauthenticated
		// as none, so it spends the same per-source budget.
		return a.allowUnauth(src)
	}
	if code, refuse := a.refusal(msg, h.Method(), info, src); refuse {
		if resp, err := stun.Build(stun.NewTransactionIDSetter(msg.TransactionID),
			stun.NewType(msg.Type.Method, stun.ClassErrorResponse), code,
			stun.MessageIntegrity(key), stun.Fingerprint); err == nil {
			r.reply(resp.Raw, src)
		}
		return false
	}
	a.s.handoff.put(handoffID(src.String(), string(info.Username)),
		handedKey{user: user, key: key, expires: a.s.now().Add(handoffTTL)})
	if n, ok := r.(authNotifier); ok {
		n.authenticated()
	}
	return true
}

func (a *admission) allowUnauth(src net.Addr) bool {
	if a.s.policy.Load().unauth.Allow(addrPortOf(src).Addr(), a.s.now()) {
		return true
	}
	a.s.m.unauthDrop.Inc()
	return false
}

// verify finds the secret whose key checks the message's MESSAGE-INTEGRITY.
func (a *admission) verify(b, username []byte) (*stun.Message, []byte, string, bool) {
	e, ok := a.s.keys.get(a.s.ring, a.s.realm, string(username), a.s.now())
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
