package signal

import (
	"context"
	"crypto/subtle"
	"errors"
	"sync"
	"time"
)

// Bounds on what parked sessions may hold. A parked session is memory the hub keeps for a
// client that is not there, so an attacker who opens connections and drops them must not be
// able to grow it: each session buffers at most signal.resume_buffer frames and
// maxParkedBytes, a node parks at most maxParked sessions and, per client IP, as many as
// signal.max_conns_per_ip; the in-memory store also caps all parked buffers together. Past a
// bound the session is not kept (its rooms hear peer-left at once).
const (
	maxParkedBytes      = 1 << 20
	maxParkedTotalBytes = 64 << 20
	maxParked           = 10000
)

var (
	errNoSession  = errors.New("no resumable session for this token")
	errNotCurrent = errors.New("the session's token changed: it was resumed or ended meanwhile")
	errOverflow   = errors.New("the session missed more than its buffer holds")
)

// claimed is what a successful claim hands the hub.
type claimed struct {
	id       string
	turnUser string
	rooms    []string // the rooms as the store knows them; nil when the hub's own session has them
	missed   [][]byte // frames its rooms sent while it was parked, in order
}

// resumeStore keeps what resuming a session needs: its token record, and while it is parked
// its memberships and the frames it misses. The in-memory store serves one node; RedisRooms
// implements it so that a client can resume on any node of a cluster.
type resumeStore interface {
	// save records a live session under tok; the session's earlier token stops working.
	save(ctx context.Context, id string, tok resumeToken, turnUser string) error
	// park keeps id's memberships of rooms until `until` and starts buffering, within max
	// frames and maxParkedBytes, what its rooms send it, pending first. errNotCurrent: tok is
	// no longer the session's; errOverflow: pending is already past the bounds.
	park(ctx context.Context, id string, tok resumeToken, rooms []string, until time.Time, pending [][]byte, max int) error
	// appendParked buffers a frame for a parked session. taken is false when the session is
	// no longer parked but resumed on this node (the caller keeps the frame for the new
	// connection). When the frame overflows the buffer the session ends (ended): left names
	// the rooms it left, which the caller tells peer-left.
	appendParked(id string, frame []byte) (taken, ended bool, left []string)
	// claim consumes the token tok if it is the session's current one (the validator hash is
	// compared in constant time) and makes next its token. attach is called with the session's
	// id before frames may reach it on this node; it returns where they go.
	claim(ctx context.Context, tok, next resumeToken, attach func(id string) Deliver) (claimed, error)
	// end forgets the session if tok is still its token (else errNotCurrent). A parked session
	// leaves its rooms and end returns them, for peer-left; a live one's rooms are the hub's
	// business.
	end(ctx context.Context, id string, tok resumeToken, parked bool) (left []string, err error)
	// shared reports whether other nodes see this store, so that a session parked here can be
	// resumed even after this process is gone.
	shared() bool
}

// memResume is the single-node store. Parked sessions stay members of their rooms in the
// Rooms the hub uses, with the session's own Deliver, which hands frames back here.
type memResume struct {
	rooms Rooms

	mu    sync.Mutex
	bySel map[string]string // token selector → peer id
	byID  map[string]*memSession
	bytes int // all parked buffers together
}

type memSession struct {
	tok      resumeToken
	turnUser string
	parked   bool
	rooms    []string
	max      int
	buf      [][]byte
	bytes    int
}

func newMemResume(rooms Rooms) *memResume {
	return &memResume{rooms: rooms, bySel: make(map[string]string), byID: make(map[string]*memSession)}
}

func (m *memResume) shared() bool { return false }

func (m *memResume) save(_ context.Context, id string, tok resumeToken, turnUser string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.byID[id]; old != nil {
		m.dropLocked(id, old)
	}
	m.byID[id] = &memSession{tok: tok, turnUser: turnUser}
	m.bySel[tok.sel] = id
	return nil
}

func (m *memResume) dropLocked(id string, r *memSession) {
	delete(m.bySel, r.tok.sel)
	delete(m.byID, id)
	m.bytes -= r.bytes
}

func (m *memResume) park(_ context.Context, id string, tok resumeToken, rooms []string, _ time.Time, pending [][]byte, max int) error {
	size := 0
	for _, f := range pending {
		size += len(f)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.byID[id]
	if r == nil || r.tok != tok || r.parked {
		return errNotCurrent
	}
	if len(pending) > max || size > maxParkedBytes || m.bytes+size > maxParkedTotalBytes {
		return errOverflow
	}
	r.parked, r.rooms, r.max = true, rooms, max
	r.buf, r.bytes = append([][]byte(nil), pending...), size
	m.bytes += size
	return nil
}

func (m *memResume) appendParked(id string, frame []byte) (taken, ended bool, left []string) {
	m.mu.Lock()
	r := m.byID[id]
	switch {
	case r == nil:
		m.mu.Unlock()
		return true, false, nil // ended: nobody to keep it for
	case !r.parked:
		m.mu.Unlock()
		return false, false, nil
	case len(r.buf) < r.max && r.bytes+len(frame) <= maxParkedBytes && m.bytes+len(frame) <= maxParkedTotalBytes:
		r.buf = append(r.buf, frame)
		r.bytes += len(frame)
		m.bytes += len(frame)
		m.mu.Unlock()
		return true, false, nil
	}
	m.dropLocked(id, r)
	m.mu.Unlock()
	return true, true, m.leave(id, r.rooms)
}

func (m *memResume) leave(id string, rooms []string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), leaveWait)
	defer cancel()
	left := make([]string, 0, len(rooms))
	for _, room := range rooms {
		if err := m.rooms.Leave(ctx, room, id); err == nil {
			left = append(left, room)
		}
	}
	return left
}

func (m *memResume) claim(_ context.Context, tok, next resumeToken, attach func(string) Deliver) (claimed, error) {
	m.mu.Lock()
	id, ok := m.bySel[tok.sel]
	r := m.byID[id]
	if !ok || r == nil || subtle.ConstantTimeCompare(r.tok.hash[:], tok.hash[:]) != 1 {
		m.mu.Unlock()
		return claimed{}, errNoSession
	}
	delete(m.bySel, tok.sel)
	m.bySel[next.sel] = id
	r.tok = next
	missed := r.buf
	m.bytes -= r.bytes
	r.parked, r.buf, r.bytes, r.rooms = false, nil, 0, nil
	m.mu.Unlock()
	attach(id)
	return claimed{id: id, turnUser: r.turnUser, missed: missed}, nil
}

func (m *memResume) end(_ context.Context, id string, tok resumeToken, parked bool) ([]string, error) {
	m.mu.Lock()
	r := m.byID[id]
	if r == nil || r.tok != tok || r.parked != parked {
		m.mu.Unlock()
		return nil, errNotCurrent
	}
	m.dropLocked(id, r)
	m.mu.Unlock()
	if !parked {
		return nil, nil
	}
	return m.leave(id, r.rooms), nil
}
