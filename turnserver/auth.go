package turnserver

import (
	"net"
	"sync"
	"time"

	"github.com/pion/turn/v5"

	"icehub/internal/ratelimit"
)

// authHandler implements turn.AuthHandler. pion calls it only for requests admission
// verified and re-signed with pion's nonce (admission answers every other authenticated
// request itself), so the key is the one admission handed over. A missing key means that
// invariant broke: refuse (pion answers 401).
func (s *Server) authHandler(ra *turn.RequestAttributes) (string, []byte, bool) {
	if k, ok := s.handoff.take(handoffID(ra.SrcAddr, ra.Username), s.now()); ok {
		return k.user, k.key, true
	}
	s.m.authFail.WithLabelValues("no_verified_key").Inc()
	return "", nil, false
}

// handoffTTL bounds how long a verified key waits for pion's AuthHandler call, which
// normally follows within microseconds on the same goroutine.
const handoffTTL = 5 * time.Second

// keyHandoff carries the MESSAGE-INTEGRITY key admission verified to pion's AuthHandler for
// the same transport, source and username: pion calls the handler right after admission
// passed it the request, on the same goroutine. It lets any configured secret verify
// although pion's AuthHandler can return only one key.
type keyHandoff struct {
	mu sync.Mutex
	m  map[string]handedKey
}

type handedKey struct {
	user    string
	key     []byte
	expires time.Time
}

func newKeyHandoff() *keyHandoff { return &keyHandoff{m: make(map[string]handedKey)} }

// handoffID names a request's key by transport (a UDP and a TCP client can share an
// address and port), source and username.
func handoffID(src net.Addr, username string) string {
	return src.Network() + "|" + src.String() + "\x00" + username
}

func (h *keyHandoff) put(id string, k handedKey) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.m) >= ratelimit.MaxTracked {
		now := time.Now()
		for id, v := range h.m {
			if now.After(v.expires) {
				delete(h.m, id)
			}
		}
		if len(h.m) >= ratelimit.MaxTracked {
			clear(h.m)
		}
	}
	h.m[id] = k
}

// take returns and forgets the key for id; one verification serves one request.
func (h *keyHandoff) take(id string, now time.Time) (handedKey, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k, ok := h.m[id]
	if ok {
		delete(h.m, id)
	}
	if !ok || now.After(k.expires) {
		return handedKey{}, false
	}
	return k, true
}
