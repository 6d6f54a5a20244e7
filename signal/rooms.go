package signal

import (
	"context"
	"errors"
	"slices"
	"sync"
)

// Sentinel errors a Rooms implementation returns; the hub maps them to frames with errors.Is.
var (
	// ErrRoomFull means the room already holds its maximum number of peers.
	ErrRoomFull = errors.New("room is full")
	// ErrNotMember means the peer is not in the room.
	ErrNotMember = errors.New("not a member of the room")
	// ErrNoPeer means a message's target is not in the room.
	ErrNoPeer = errors.New("target peer is not in the room")
	// ErrUnavailable means the shared room store (e.g. Redis) cannot be reached.
	ErrUnavailable = errors.New("room store unavailable")
)

// Deliver hands one encoded frame to a local peer's connection. It must not block: the hub's
// implementation queues the frame or disconnects a peer whose queue is full.
type Deliver func(frame []byte)

// Rooms is the membership and fan-out store the protocol code talks to. The in-memory one
// serves a single node; a clustered one keeps membership and capacity in a shared store and
// carries frames between nodes, calling each local member's Deliver. Methods are safe for
// concurrent use.
type Rooms interface {
	// Join adds peer to room unless it holds max peers already (ErrRoomFull), returning the
	// ids of the members that were there before. deliver receives frames published to peer.
	Join(ctx context.Context, room, peer string, max int, deliver Deliver) (members []string, err error)
	// Leave removes peer from room; ErrNotMember when it was not there.
	Leave(ctx context.Context, room, peer string) error
	// Publish sends frame to every member of room except from, or only to `to` when it is
	// set (ErrNoPeer when `to` is not a member).
	Publish(ctx context.Context, room, from, to string, frame []byte) error
}

// MemoryRooms keeps rooms in this process; it is what a single node runs.
type MemoryRooms struct {
	mu    sync.RWMutex
	rooms map[string]map[string]Deliver
}

// NewMemoryRooms returns an empty in-memory room store.
func NewMemoryRooms() *MemoryRooms {
	return &MemoryRooms{rooms: make(map[string]map[string]Deliver)}
}

// Join implements Rooms.
func (m *MemoryRooms) Join(_ context.Context, room, peer string, max int, deliver Deliver) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	members := m.rooms[room]
	if _, ok := members[peer]; ok {
		return m.idsLocked(room, peer), nil
	}
	if max > 0 && len(members) >= max {
		return nil, ErrRoomFull
	}
	ids := m.idsLocked(room, peer)
	if members == nil {
		members = make(map[string]Deliver)
		m.rooms[room] = members
	}
	members[peer] = deliver
	return ids, nil
}

func (m *MemoryRooms) idsLocked(room, except string) []string {
	ids := make([]string, 0, len(m.rooms[room]))
	for id := range m.rooms[room] {
		if id != except {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Leave implements Rooms.
func (m *MemoryRooms) Leave(_ context.Context, room, peer string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	members := m.rooms[room]
	if _, ok := members[peer]; !ok {
		return ErrNotMember
	}
	delete(members, peer)
	if len(members) == 0 {
		delete(m.rooms, room)
	}
	return nil
}

// Publish implements Rooms. Deliver runs outside the lock so a slow-consumer disconnect,
// which leaves rooms, can never deadlock against it.
func (m *MemoryRooms) Publish(_ context.Context, room, from, to string, frame []byte) error {
	m.mu.RLock()
	members := m.rooms[room]
	if to != "" {
		d, ok := members[to]
		m.mu.RUnlock()
		if !ok {
			return ErrNoPeer
		}
		d(frame)
		return nil
	}
	var small [8]Deliver // rooms are small: no allocation per publish
	targets := small[:0]
	for id, d := range members {
		if id != from {
			targets = append(targets, d)
		}
	}
	m.mu.RUnlock()
	for _, d := range targets {
		d(frame)
	}
	return nil
}

// Len returns the number of non-empty rooms, for the rooms gauge.
func (m *MemoryRooms) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.rooms)
}
