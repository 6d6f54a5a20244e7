package signal

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"sync"
	"time"
)

// A resume token is a split token: a random selector that finds the session's record, and a
// random validator of which the store keeps only the SHA-256. Neither part is derived from
// anything another client sees (the peer id, the TURN user), a stolen store dump holds no
// usable token, and the validator is checked with a constant-time compare.
const (
	selectorBytes  = 16
	validatorBytes = 32
	tokenChars     = (selectorBytes + validatorBytes) * 4 / 3 // base64url without padding: 64
)

// resumeToken is what a store keeps of a token: the selector and the validator's hash.
type resumeToken struct {
	sel  string // base64url of the selector bytes
	hash [sha256.Size]byte
}

// newResumeToken returns a fresh token for the client and what the store keeps of it.
func newResumeToken() (string, resumeToken) {
	var b [selectorBytes + validatorBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail on supported platforms.
	return base64.RawURLEncoding.EncodeToString(b[:]), resumeToken{
		sel:  base64.RawURLEncoding.EncodeToString(b[:selectorBytes]),
		hash: sha256.Sum256(b[selectorBytes:]),
	}
}

// parseResumeToken splits a token a client presented; ok is false for anything that is not
// exactly a token's shape, which the hub treats like an unknown token.
func parseResumeToken(s string) (rec resumeToken, ok bool) {
	if len(s) != tokenChars {
		return rec, false
	}
	var b [selectorBytes + validatorBytes]byte
	n, err := base64.RawURLEncoding.Decode(b[:], []byte(s))
	if err != nil || n != len(b) {
		return rec, false
	}
	return resumeToken{
		sel:  base64.RawURLEncoding.EncodeToString(b[:selectorBytes]),
		hash: sha256.Sum256(b[selectorBytes:]),
	}, true
}

type sessState uint8

const (
	sessLive     sessState = iota // a connection is attached, or about to be
	sessParked                    // its connection was lost; the store keeps it until the window ends
	sessResuming                  // a resume claimed it; the new connection is being attached
	sessEnded                     // gone: its rooms were told peer-left
)

// session is one peer id's life on this node, which may span several connections: the rooms
// it is in, where frames for it go, and its current resume token. Rooms hold session.deliver
// (not a connection's), so a resumed connection needs no re-join and nothing is announced.
type session struct {
	h  *Hub
	id string

	mu       sync.Mutex
	conn     *client     // nil while parked or being resumed
	last     *client     // the last connection attached: its reader may still be ending
	state    sessState   // see sessState; transitions also take h.mu where the maps change
	tok      resumeToken // the current token's record; zero when resume is off
	pending  [][]byte    // frames that came while no connection was attached and the store had not taken over
	pendingB int
	overflow bool // pending went past its bound: the session can no longer be resumed
	ip       string
	turnUser string // the TURN user its credentials are minted for (never shown to other peers)

	// Written only by whoever holds the session: the attached connection's reader, or the
	// hub while no reader runs (park, end, attach), with the hand-over ordered by mu.
	rooms map[string]struct{}

	// Set when parked on this node, under h.mu.
	parkedHere bool
	parkedIP   string
	timer      *time.Timer
}

// deliver is the Deliver every room holds for this session. It never blocks: a live
// connection queues the frame; without one, the frame waits in pending until the store takes
// over (or, parked, goes to the store's buffer for this session).
func (s *session) deliver(frame []byte) {
	s.mu.Lock()
	if c := s.conn; c != nil && c.enqueue(frame) {
		s.mu.Unlock()
		return
	}
	switch {
	case s.state == sessEnded || s.overflow:
		s.mu.Unlock()
	case s.state == sessParked:
		// s.mu stays held so that a resume on this node, which takes it after claiming the
		// store's buffer, finds in pending whatever the store no longer took.
		taken, ended, left := s.h.store.appendParked(s.id, frame)
		if !taken {
			s.pending = append(s.pending, frame)
			s.pendingB += len(frame)
		}
		s.mu.Unlock()
		if ended {
			s.h.overflowed(s, left)
		}
	default:
		pol := s.h.pol.Load()
		if len(s.pending) >= pol.resumeBuffer || s.pendingB+len(frame) > maxParkedBytes {
			s.overflow, s.pending, s.pendingB = true, nil, 0
		} else {
			s.pending = append(s.pending, frame)
			s.pendingB += len(frame)
		}
		s.mu.Unlock()
	}
}

// roomFrames returns the frames of q that came from rooms (message, peer-joined,
// peer-left), which a resumed session must get; the hub's answers to the connection's own
// requests are not replayed. The hub encodes every frame with "type" first.
func roomFrames(q [][]byte) [][]byte {
	var out [][]byte
	for _, f := range q {
		if bytes.HasPrefix(f, []byte(`{"type":"message"`)) || bytes.HasPrefix(f, []byte(`{"type":"peer-`)) {
			out = append(out, f)
		}
	}
	return out
}

// takeUnsent moves what c's queue still held when it was lost to the front of pending, within
// the same bound; s.mu is held.
func (s *session) takeUnsentLocked(c *client) {
	c.mu.Lock()
	unsent := c.unsent
	c.unsent = nil
	c.mu.Unlock()
	if len(unsent) == 0 || s.overflow {
		return
	}
	size := s.pendingB
	for _, f := range unsent {
		size += len(f)
	}
	if len(unsent)+len(s.pending) > s.h.pol.Load().resumeBuffer || size > maxParkedBytes {
		s.overflow, s.pending, s.pendingB = true, nil, 0
		return
	}
	s.pending = append(unsent, s.pending...)
	s.pendingB = size
}

// roomList returns the session's rooms, sorted; only the session's holder may call it.
func (s *session) roomList() []string {
	rooms := make([]string, 0, len(s.rooms))
	for r := range s.rooms {
		rooms = append(rooms, r)
	}
	slices.Sort(rooms)
	return rooms
}
