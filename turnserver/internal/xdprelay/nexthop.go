//go:build linux

package xdprelay

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// The program sends a relayed datagram out of the interface and to the MAC that user space
// put in the nexthops map for its (source, destination) pair. Bind resolves a new pair at
// once (route, then the neighbour entry); a refresher re-reads the neighbour and link
// tables every Config.NeighbourRefresh and the routes every routeEvery rounds, and updates
// or removes entries that changed. A pair with no usable entry (route through an interface
// without a MAC, neighbour not resolved yet, destination local) has no map entry, and its
// packets go up the stack: user space relays them, and its sending makes the kernel
// resolve the neighbour, which the next refresh picks up.

const routeEvery = 10

type hopKey struct{ src, dst netip.Addr }

type hop struct {
	refs      int
	rt        route
	routed    bool
	val       relayNexthopVal
	installed bool
}

func (k hopKey) mapKey() relayNexthopKey {
	var mk relayNexthopKey
	mk.SrcIp, mk.DstIp = ip16(k.src), ip16(k.dst)
	mk.Family = 6
	if k.dst.Is4() {
		mk.Family = 4
	}
	return mk
}

func (b Binding) hopKeys() [2]hopKey {
	return [2]hopKey{{b.Relay.Addr(), b.Peer.Addr()}, {b.Listen.Addr(), b.Client.Addr()}}
}

// holdHops takes a reference on both of b's next hops, resolving new ones. Called with o.mu.
func (o *Offload) holdHops(b Binding) {
	for _, k := range b.hopKeys() {
		h, ok := o.hops[k]
		if !ok {
			h = &hop{}
			o.hops[k] = h
			o.resolve(k, h, nil, nil, true)
		}
		h.refs++
	}
}

// releaseHops drops b's references; the last one removes the entry. Called with o.mu.
func (o *Offload) releaseHops(b Binding) {
	for _, k := range b.hopKeys() {
		h, ok := o.hops[k]
		if !ok {
			continue
		}
		if h.refs--; h.refs <= 0 {
			if h.installed {
				mk := k.mapKey()
				_ = o.objs.Nexthops.Delete(&mk)
			}
			delete(o.hops, k)
		}
	}
}

// resolve recomputes h and installs, updates or removes its map entry. links and neigh
// are the latest dumps, or nil to ask the kernel about this one pair. Called with o.mu.
func (o *Offload) resolve(k hopKey, h *hop, links map[int]linkInfo, neigh map[neighKey]net.HardwareAddr, reroute bool) {
	var val relayNexthopVal
	ok := false
	if reroute || !h.routed {
		rt, err := o.nl.routeGet(k.src, k.dst)
		h.rt, h.routed = rt, err == nil
	}
	if h.routed {
		val, ok = o.nexthopVal(h.rt, links, neigh)
	}
	mk := k.mapKey()
	switch {
	case ok && (!h.installed || val != h.val):
		if o.objs.Nexthops.Put(&mk, &val) == nil {
			h.val, h.installed = val, true
		}
	case !ok && h.installed:
		_ = o.objs.Nexthops.Delete(&mk)
		h.installed = false
	}
}

func (o *Offload) nexthopVal(rt route, links map[int]linkInfo, neigh map[neighKey]net.HardwareAddr) (relayNexthopVal, bool) {
	var val relayNexthopVal
	var li linkInfo
	var mac net.HardwareAddr
	if links != nil {
		li = links[rt.oif]
	} else if ifi, ok := o.ifaces[rt.oif]; ok {
		li = ifi
	}
	if neigh != nil {
		mac = neigh[neighKey{rt.oif, rt.hop}]
	} else {
		mac, _ = o.nl.neighbour(rt.oif, rt.hop)
	}
	if len(li.mac) != 6 || len(mac) != 6 || li.mtu <= 0 {
		return val, false
	}
	val.Ifindex = uint32(rt.oif)
	val.Mtu = uint16(min(li.mtu, 0xffff))
	copy(val.Smac[:], li.mac)
	copy(val.Dmac[:], mac)
	return val, true
}

// refreshLoop re-resolves every held next hop until stop is closed.
func (o *Offload) refreshLoop(every time.Duration) {
	defer close(o.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for round := 1; ; round++ {
		select {
		case <-o.stop:
			return
		case <-t.C:
		}
		links, err1 := o.nl.links()
		neigh, err2 := o.nl.neighbours()
		if err1 != nil || err2 != nil {
			continue // keep what is installed; the next round tries again
		}
		o.mu.Lock()
		if !o.closed {
			for ifindex, li := range links {
				if _, ours := o.ifaces[ifindex]; ours {
					o.ifaces[ifindex] = li
				}
			}
			for k, h := range o.hops {
				o.resolve(k, h, links, neigh, round%routeEvery == 0)
			}
		}
		o.mu.Unlock()
	}
}

// neighbour asks for one neighbour entry; nil when there is none usable.
func (r *rtnl) neighbour(ifindex int, ip netip.Addr) (net.HardwareAddr, error) {
	ndm := make([]byte, 12)
	ndm[0] = family(ip)
	binary.NativeEndian.PutUint32(ndm[4:8], uint32(ifindex))
	msgs, err := r.request(unix.RTM_GETNEIGH, false, append(ndm, attr(unix.NDA_DST, ip.AsSlice())...))
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, err
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWNEIGH || len(m.Data) < 12 {
			continue
		}
		state := binary.NativeEndian.Uint16(m.Data[8:10])
		const usable = unix.NUD_REACHABLE | unix.NUD_STALE | unix.NUD_DELAY | unix.NUD_PROBE | unix.NUD_PERMANENT
		if lla := attrs(m.Data[12:])[unix.NDA_LLADDR]; state&usable != 0 && len(lla) == 6 {
			return net.HardwareAddr(lla), nil
		}
	}
	return nil, nil
}
