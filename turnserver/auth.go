package turnserver

import (
	"errors"
	"sync"
	"time"

	"github.com/pion/turn/v5"

	"icehub/auth"
	"icehub/internal/ratelimit"
)

// authHandler implements turn.AuthHandler. Admission has already checked the request's
// MESSAGE-INTEGRITY against every secret and handed over the matching key; without one the
// request is refused (401).
func (s *Server) authHandler(ra *turn.RequestAttributes) (string, []byte, bool) {
	if k, ok := s.handoff.take(handoffID(ra.SrcAddr.String(), ra.Username), s.now()); ok {
		return k.user, k.key, true
	}
	reason := "bad_signature"
	_, _, err := s.ring.Passwords(ra.Username)
	switch {
	case errors.Is(err, auth.ErrExpired):
		reason = "expired"
	case err != nil:
		reason = "malformed"
	}
	s.m.authFail.WithLabelValues(reason).Inc()
	// The username is public (expiry and user name); passwords and keys are never logged.
	s.log.Info("turn auth failed", "client", ra.SrcAddr.String(), "username", ra.Username,
		"method", ra.Method.String(), "reason", reason)
	return "", nil, false
}

// handoffTTL bounds how long a verified key waits for pion's AuthHandler call, which
// normally follows within microseconds on the same goroutine.
const handoffTTL = 5 * time.Second

// keyHandoff carries the MESSAGE-INTEGRITY key admission verified to pion's AuthHandler for
// the same source and username. It lets any configured secret verify although pion's
// AuthHandler can return only one key.
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

func handoffID(src, username string) string { return src + "\x00" + username }

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
