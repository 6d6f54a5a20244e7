//go:build linux

package turnserver

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// clientAllocation is what the UDP loop knows of one allocation: the client's address on its
// listener socket, the relay and the bound channels.
type clientAllocation struct {
	client netip.AddrPort // as the listener socket reports it (not unmapped)
	relay  *loopRelay

	mu       sync.Mutex                     // serialises channel updates
	channels atomic.Pointer[[]boundChannel] // immutable; replaced on change
}

// boundChannel is one channel of an allocation.
type boundChannel struct {
	num  uint16
	peer netip.AddrPort // unmapped
}

// peerOf returns the peer bound to channel num.
func (a *clientAllocation) peerOf(num uint16) (netip.AddrPort, bool) {
	if cs := a.channels.Load(); cs != nil {
		for i := range *cs {
			if c := &(*cs)[i]; c.num == num {
				return c.peer, true
			}
		}
	}
	return netip.AddrPort{}, false
}

// channelFor returns the channel bound to peer, 0 when none is.
func (a *clientAllocation) channelFor(peer netip.AddrPort) uint16 {
	if cs := a.channels.Load(); cs != nil {
		for i := range *cs {
			if c := &(*cs)[i]; c.peer == peer {
				return c.num
			}
		}
	}
	return 0
}

func (a *clientAllocation) setChannel(num uint16, peer netip.AddrPort, bound bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var next []boundChannel
	if cs := a.channels.Load(); cs != nil {
		for _, c := range *cs {
			if c.num != num {
				next = append(next, c)
			}
		}
	}
	if bound {
		next = append(next, boundChannel{num: num, peer: peer})
	}
	a.channels.Store(&next)
}

// clientTable maps client addresses on one listener socket to their allocations.
type clientTable struct {
	mu sync.RWMutex
	m  map[netip.AddrPort]*clientAllocation
}

func (t *clientTable) get(ap netip.AddrPort) *clientAllocation {
	t.mu.RLock()
	a := t.m[ap]
	t.mu.RUnlock()
	return a
}

func (t *clientTable) put(a *clientAllocation) {
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[netip.AddrPort]*clientAllocation)
	}
	t.m[a.client] = a
	t.mu.Unlock()
}

func (t *clientTable) remove(a *clientAllocation) {
	t.mu.Lock()
	if t.m[a.client] == a {
		delete(t.m, a.client)
	}
	t.mu.Unlock()
}
