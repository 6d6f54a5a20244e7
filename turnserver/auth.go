package turnserver

import (
	"net"
	"net/netip"
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
// the same transport, source and username. It lets any configured secret verify although
// pion's AuthHandler can return only one key. Several verified requests of one client can
// wait in the UDP loop's queue for pion at once, so each put is counted and each take
// consumes one.
type keyHandoff struct {
	mu sync.Mutex
	m  map[handoffKey]handedKey
}

// handoffKey names a request's key by transport (a UDP and a TCP client can share an
// address and port), source and username.
type handoffKey struct {
	stream   bool
	src      netip.AddrPort
	username string
}

type handedKey struct {
	user    string
	key     []byte
	expires time.Time
	n       int // verified requests not yet taken
}

func newKeyHandoff() *keyHandoff { return &keyHandoff{m: make(map[handoffKey]handedKey)} }

func handoffID(src net.Addr, username string) handoffKey {
	_, udp := src.(*net.UDPAddr)
	return handoffKey{stream: !udp, src: addrPortOf(src), username: username}
}

func (h *keyHandoff) put(id handoffKey, k handedKey) {
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
	if old, ok := h.m[id]; ok && old.user == k.user && string(old.key) == string(k.key) {
		k.n = old.n
	}
	k.n++
	h.m[id] = k
}

// take returns the key for id and spends one verification: one verification serves one
// request.
func (h *keyHandoff) take(id handoffKey, now time.Time) (handedKey, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k, ok := h.m[id]
	if !ok {
		return handedKey{}, false
	}
	if k.n--; k.n <= 0 {
		delete(h.m, id)
	} else {
		h.m[id] = k
	}
	if now.After(k.expires) {
		return handedKey{}, false
	}
	return k, true
}
