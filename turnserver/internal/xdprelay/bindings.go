//go:build linux

package xdprelay

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"

	"github.com/cilium/ebpf"
)

// AllocID names an allocation for the counters. The caller picks it (a counter it keeps is
// enough): nonzero and unique among its live allocations.
type AllocID uint32

// Binding is one channel of one UDP allocation, as the TURN server accepted it.
type Binding struct {
	Alloc AllocID
	// Client is the client's address as the server sees it: the source of its datagrams.
	Client netip.AddrPort
	// Listen is the server address the client sends to. It must be the concrete local
	// address (not a wildcard): the program matches the destination of each packet.
	Listen netip.AddrPort
	// Relay is the allocation's relayed transport address; Peer the peer bound to Channel.
	Relay netip.AddrPort
	Peer  netip.AddrPort
	// Channel is the channel number, 0x4000 to 0x7FFF.
	Channel uint16
}

func (b Binding) String() string {
	return fmt.Sprintf("alloc %d: client %v → listen %v channel %#04x ⇄ relay %v → peer %v",
		b.Alloc, b.Client, b.Listen, b.Channel, b.Relay, b.Peer)
}

// normalize unmaps IPv4-mapped IPv6 addresses, so the caller may hand either form.
func (b Binding) normalize() Binding {
	un := func(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
	b.Client, b.Listen, b.Relay, b.Peer = un(b.Client), un(b.Listen), un(b.Relay), un(b.Peer)
	return b
}

// ErrMixedFamily is returned by Bind for a client on one IP family relayed to a peer on
// the other (RFC 6156 allows it): the program only rewrites headers within one family,
// so such a channel stays in user space.
var ErrMixedFamily = errors.New("client and relay address families differ")

func (b Binding) validate() error {
	if b.Alloc == 0 {
		return errors.New("allocation id 0")
	}
	if b.Channel < 0x4000 || b.Channel > 0x7fff {
		return fmt.Errorf("channel %#x outside 0x4000-0x7FFF", b.Channel)
	}
	for _, a := range []struct {
		name string
		ap   netip.AddrPort
	}{{"client", b.Client}, {"listen", b.Listen}, {"relay", b.Relay}, {"peer", b.Peer}} {
		if !a.ap.IsValid() || a.ap.Port() == 0 || a.ap.Addr().IsUnspecified() || a.ap.Addr().Zone() != "" {
			return fmt.Errorf("%s address %v: need a concrete IP and port", a.name, a.ap)
		}
	}
	if b.Client.Addr().Is4() != b.Listen.Addr().Is4() || b.Relay.Addr().Is4() != b.Peer.Addr().Is4() {
		return errors.New("address families differ within one side")
	}
	if b.Client.Addr().Is4() != b.Relay.Addr().Is4() {
		return ErrMixedFamily
	}
	return nil
}

// clientIndex and peerIndex are the Go-side mirror of the two map keys.
type clientIndex struct {
	client, listen netip.AddrPort
	channel        uint16
}

type peerIndex struct{ peer, relay netip.AddrPort }

func (b Binding) clientIndex() clientIndex { return clientIndex{b.Client, b.Listen, b.Channel} }
func (b Binding) peerIndex() peerIndex     { return peerIndex{b.Peer, b.Relay} }

// Bind installs both directions of a channel binding. Binding the same channel again is a
// no-op; a binding that reuses this channel's client key or this peer's relay key replaces
// the one it collides with (TURN forbids both, so it can only follow an Unbind the caller
// missed). The error (map full, invalid binding, ErrMixedFamily) leaves nothing installed
// for b: the caller relays that channel in user space.
func (o *Offload) Bind(b Binding) error {
	b = b.normalize()
	if err := b.validate(); err != nil {
		return fmt.Errorf("xdp bind %v: %w", b, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return errors.New("xdp bind: offload closed")
	}
	ci, pi := b.clientIndex(), b.peerIndex()
	if old, ok := o.byClient[ci]; ok {
		if old == b {
			return nil
		}
		o.unbindLocked(old)
	}
	if oldCI, ok := o.byPeer[pi]; ok {
		o.unbindLocked(o.byClient[oldCI])
	}
	if _, ok := o.allocs[b.Alloc]; !ok {
		zero := make([]relayAllocStats, runtime.NumCPU())
		if n, err := ebpf.PossibleCPU(); err == nil {
			zero = make([]relayAllocStats, n)
		}
		if err := o.objs.AllocCounters.Update(uint32(b.Alloc), zero, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("xdp bind %v: counters: %w", b, err)
		}
		o.allocs[b.Alloc] = map[clientIndex]struct{}{}
	}
	// Next hops first, so the channel's first packets already find them.
	o.holdHops(b)
	ck, cv, pk, pv := encode(b)
	if err := o.objs.PeerBindings.Put(&pk, &pv); err != nil {
		o.releaseHops(b)
		o.dropAllocIfEmpty(b.Alloc)
		return fmt.Errorf("xdp bind %v: %w", b, err)
	}
	if err := o.objs.ClientBindings.Put(&ck, &cv); err != nil {
		_ = o.objs.PeerBindings.Delete(&pk)
		o.releaseHops(b)
		o.dropAllocIfEmpty(b.Alloc)
		return fmt.Errorf("xdp bind %v: %w", b, err)
	}
	o.byClient[ci] = b
	o.byPeer[pi] = ci
	o.allocs[b.Alloc][ci] = struct{}{}
	return nil
}

// Unbind removes both directions of b's channel (matched by client, listen address and
// channel number); later packets of that channel reach the sockets. Unknown bindings are
// ignored.
func (o *Offload) Unbind(b Binding) error {
	b = b.normalize()
	o.mu.Lock()
	defer o.mu.Unlock()
	old, ok := o.byClient[b.clientIndex()]
	if !ok || o.closed {
		return nil
	}
	return o.unbindLocked(old)
}

func (o *Offload) unbindLocked(b Binding) error {
	ck, _, pk, _ := encode(b)
	err := errors.Join(ignoreMissing(o.objs.ClientBindings.Delete(&ck)), ignoreMissing(o.objs.PeerBindings.Delete(&pk)))
	delete(o.byClient, b.clientIndex())
	delete(o.byPeer, b.peerIndex())
	delete(o.allocs[b.Alloc], b.clientIndex())
	o.releaseHops(b)
	return err
}

func (o *Offload) dropAllocIfEmpty(id AllocID) {
	if len(o.allocs[id]) == 0 {
		delete(o.allocs, id)
		_ = o.objs.AllocCounters.Delete(uint32(id))
	}
}

func ignoreMissing(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// RemoveAllocation removes every channel of allocation id and its counters, and returns the
// counters' final values for the allocation's log line.
func (o *Offload) RemoveAllocation(id AllocID) (Counters, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	chans, ok := o.allocs[id]
	if !ok || o.closed {
		return Counters{}, nil
	}
	var errs []error
	for ci := range chans {
		errs = append(errs, o.unbindLocked(o.byClient[ci]))
	}
	c, err := o.countersLocked(id)
	errs = append(errs, err, ignoreMissing(o.objs.AllocCounters.Delete(uint32(id))))
	delete(o.allocs, id)
	return c, errors.Join(errs...)
}

// Bindings returns every installed binding, ordered by allocation and channel: on a reload
// the caller re-checks each against its new peer filter and Unbinds the ones it now denies.
func (o *Offload) Bindings() []Binding {
	o.mu.Lock()
	out := make([]Binding, 0, len(o.byClient))
	for _, b := range o.byClient {
		out = append(out, b)
	}
	o.mu.Unlock()
	slices.SortFunc(out, func(a, b Binding) int {
		return cmp.Or(cmp.Compare(a.Alloc, b.Alloc), cmp.Compare(a.Channel, b.Channel),
			a.Client.Compare(b.Client), a.Listen.Compare(b.Listen))
	})
	return out
}

// encode turns a validated binding into the map keys and values: addresses in 16 bytes
// (IPv4 in the first 4, the rest zero), ports and channel in network byte order in memory.
func encode(b Binding) (relayClientKey, relayClientVal, relayPeerKey, relayPeerVal) {
	fam := uint8(6)
	if b.Client.Addr().Is4() {
		fam = 4
	}
	var ck relayClientKey
	ck.ClientIp, ck.ServerIp = ip16(b.Client.Addr()), ip16(b.Listen.Addr())
	ck.ClientPort, ck.ServerPort, ck.Channel = be16(b.Client.Port()), be16(b.Listen.Port()), be16(b.Channel)
	ck.Family = fam
	var cv relayClientVal
	cv.RelayIp, cv.PeerIp = ip16(b.Relay.Addr()), ip16(b.Peer.Addr())
	cv.RelayPort, cv.PeerPort, cv.Alloc = be16(b.Relay.Port()), be16(b.Peer.Port()), uint32(b.Alloc)
	var pk relayPeerKey
	pk.PeerIp, pk.RelayIp = ip16(b.Peer.Addr()), ip16(b.Relay.Addr())
	pk.PeerPort, pk.RelayPort, pk.Family = be16(b.Peer.Port()), be16(b.Relay.Port()), fam
	var pv relayPeerVal
	pv.ClientIp, pv.ServerIp = ip16(b.Client.Addr()), ip16(b.Listen.Addr())
	pv.ClientPort, pv.ServerPort, pv.Channel = be16(b.Client.Port()), be16(b.Listen.Port()), be16(b.Channel)
	pv.Alloc = uint32(b.Alloc)
	return ck, cv, pk, pv
}

func ip16(a netip.Addr) (out [16]byte) {
	if a.Is4() {
		v4 := a.As4()
		copy(out[:], v4[:])
		return out
	}
	return a.As16()
}

// be16 returns the uint16 whose in-memory bytes (in the host's order, as the map stores
// it) are v in network order.
func be16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
