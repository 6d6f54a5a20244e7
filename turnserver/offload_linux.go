//go:build linux

package turnserver

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"icehub/turnserver/internal/xdprelay"
)

// The XDP offload (turn.offload = "xdp"): package xdprelay relays the ChannelData of UDP
// clients inside the kernel, driven from pion's events. pion stays the authority: a channel
// is installed in the kernel only while pion has it and a permission for its peer, and only
// when the peer filter itself allows the peer; everything the kernel does not relay takes
// the user-space path (the UDP loop or pion), which keeps knowing every channel.
//
// What is never offloaded, and why:
//   - clients on TCP/TLS, and TCP relays: the program only rewrites UDP datagrams;
//   - clients of a wildcard listen address (0.0.0.0, [::]) and relays bound to a wildcard:
//     the program matches each packet's destination, and pion only knows the socket's
//     wildcard address, not the one the client sent to;
//   - a client and relay of different IP families (RFC 6156 allows it; the program
//     rewrites within one family);
//   - peers the filter refuses and that are reachable only through the own-relay exception
//     (sendAllowed checks that exception per packet against the live relays; the kernel
//     cannot follow it);
//   - allocations under a bitrate cap (see offloadable).

// offloadSyncEvery is how often the kernel's per-allocation counters are added to the
// allocation records and the relayed-traffic metrics (and the offloaded-packets metric).
// Each pass costs one map lookup per offloaded allocation.
const offloadSyncEvery = 2 * time.Second

// offloadChannelsPerAlloc bounds the channels one allocation holds in the kernel: the
// kernel's table is shared (xdprelay.Config.MaxBindings), and one client binding thousands
// of channels must not take it from everyone else. WebRTC uses a few per allocation; the
// rest stay in user space, which relays them as before.
const offloadChannelsPerAlloc = 64

// offloader is the server's handle on the offload; nil when it is off. Its methods are
// safe on a nil receiver, so the event handlers call them unconditionally.
type offloader struct {
	s   *Server
	off *xdprelay.Offload

	// mu orders channel, permission, reload and deletion events against each other, so a
	// reload's re-check cannot miss a binding installed under the old filter.
	mu          sync.Mutex
	allocs      map[*relayRecord]*offAlloc
	ids         map[xdprelay.AllocID]bool // in use by allocs
	nextID      xdprelay.AllocID
	maxChannels int
	total       uint64 // what of off.Total() the offloaded metric has
	closed      bool

	warned     atomic.Bool // a failed Bind was logged at warn level once
	stop, done chan struct{}
}

// offAlloc is what the offloader knows of one offloadable allocation: its addresses, pion's
// channels and permissions, the channels installed in the kernel, and the part of its kernel
// counters already accounted.
type offAlloc struct {
	rec                   *relayRecord
	id                    xdprelay.AllocID
	client, listen, relay netip.AddrPort
	channels              map[uint16]netip.AddrPort
	byIP                  map[netip.Addr]map[uint16]bool // channels by peer IP, for permission events
	perms                 map[netip.Addr]bool
	bound                 map[uint16]bool
	seen                  xdprelay.Counters
}

// openOffload opens the offload when cfg asks for it. When it cannot, it logs one line
// saying why and returns nil: the server relays in user space.
func openOffload(s *Server, cfg Config) *offloader {
	if cfg.Offload != OffloadXDP {
		return nil
	}
	ifaces := cfg.OffloadInterfaces
	if len(ifaces) == 0 {
		var err error
		if ifaces, err = xdprelay.DefaultInterfaces(offloadAddrs(cfg)); err != nil {
			s.log.Warn("turn xdp offload off; relaying in user space", "err", "interfaces: "+err.Error())
			return nil
		}
	}
	off, err := xdprelay.Open(xdprelay.Config{Interfaces: ifaces})
	if err != nil {
		s.log.Warn("turn xdp offload off; relaying in user space", "err", err.Error())
		return nil
	}
	o := &offloader{s: s, off: off, allocs: map[*relayRecord]*offAlloc{}, ids: map[xdprelay.AllocID]bool{},
		maxChannels: cmp(cfg.offloadChannels, offloadChannelsPerAlloc),
		stop:        make(chan struct{}), done: make(chan struct{})}
	go o.syncLoop(cmp(cfg.offloadSync, offloadSyncEvery))
	s.log.Info("turn xdp offload on", "interfaces", ifaces, "modes", off.Modes())
	return o
}

// offloadAddrs are the local addresses the offload serves: the concrete listen IPs, and
// relay_ip (relays otherwise bind to the listen IP).
func offloadAddrs(cfg Config) []netip.Addr {
	var out []netip.Addr
	for _, ap := range cfg.Listen {
		if !ap.Addr().IsUnspecified() {
			out = append(out, ap.Addr())
		}
	}
	if cfg.RelayIP.IsValid() && !cfg.RelayIP.IsUnspecified() {
		out = append(out, cfg.RelayIP)
	}
	return out
}

// offloadable is where an allocation is kept out of the kernel for what the XDP program
// cannot enforce. A bitrate cap (turn.max_bitrate, turn.total_bitrate) is enforced per
// packet in user space and not in the kernel: an allocation under a cap is not offloaded,
// or its channels would bypass the cap (underBitrateCap, bitrate.go). It is asked again for
// every channel on every reload (reconcile), so a cap a reload introduces takes the
// allocation's channels out of the kernel.
func (s *Server) offloadable(rec *relayRecord) bool {
	return rec.network == "udp" && !s.underBitrateCap(rec)
}

// allocFor returns the state of rec's allocation, creating it on the first event, or nil
// when the allocation cannot be offloaded. Called with o.mu held.
func (o *offloader) allocFor(rec *relayRecord, client, listen net.Addr) *offAlloc {
	if a := o.allocs[rec]; a != nil {
		return a
	}
	if _, udp := client.(*net.UDPAddr); !udp || !o.s.offloadable(rec) {
		return nil
	}
	c, l, r := addrPortOf(client), addrPortOf(listen), rec.bind
	if !concrete(l) || !concrete(r) || !concrete(c) || c.Addr().Is4() != r.Addr().Is4() {
		return nil
	}
	o.nextID++
	for o.nextID == 0 || o.ids[o.nextID] { // after 2³² allocations the numbers wrap
		o.nextID++
	}
	a := &offAlloc{rec: rec, id: o.nextID, client: c, listen: l, relay: r,
		channels: map[uint16]netip.AddrPort{}, byIP: map[netip.Addr]map[uint16]bool{},
		perms: map[netip.Addr]bool{}, bound: map[uint16]bool{}}
	o.allocs[rec] = a
	o.ids[a.id] = true
	return a
}

func concrete(ap netip.AddrPort) bool {
	return ap.IsValid() && ap.Port() != 0 && !ap.Addr().IsUnspecified()
}

func (a *offAlloc) binding(num uint16) xdprelay.Binding {
	return xdprelay.Binding{Alloc: a.id, Client: a.client, Listen: a.listen, Relay: a.relay,
		Peer: a.channels[num], Channel: num}
}

// reconcileLocked makes the kernel hold channel num of a exactly when pion has it, has a
// permission for its peer, the current peer filter allows the peer, and the allocation is
// offloadable (within its share of the kernel's table).
func (o *offloader) reconcileLocked(a *offAlloc, num uint16) {
	peer, ok := a.channels[num]
	if ok && a.perms[peer.Addr()] && o.s.offloadable(a.rec) {
		ok, _ = o.s.policy.Load().filter.Check(peer.Addr())
	} else {
		ok = false
	}
	switch {
	case !ok && a.bound[num]:
		_ = o.off.Unbind(a.binding(num))
		delete(a.bound, num)
		return
	case !ok || a.bound[num]:
		return
	case len(a.bound) >= o.maxChannels:
		o.s.log.Debug("turn xdp offload: channel relayed in user space: the allocation has its share of the kernel's table",
			"client", a.client.String(), "channels", len(a.bound))
		return
	}
	if err := o.off.Bind(a.binding(num)); err != nil {
		// Map full, or a kernel error: this channel stays in user space, which still
		// relays it. One warning tells the operator; the rest would only flood the log.
		if o.warned.CompareAndSwap(false, true) {
			o.s.log.Warn("turn xdp offload: channel relayed in user space (further ones at debug level)", "err", err.Error())
		} else {
			o.s.log.Debug("turn xdp offload: channel relayed in user space", "err", err.Error())
		}
		return
	}
	a.bound[num] = true
}

// channel follows pion's channel events (after the ChannelBind passed authentication,
// quotas, the peer filter and created the permission; or the channel expired or its
// allocation is closing).
func (o *offloader) channel(relay, client, listen, peer net.Addr, num uint16, bound bool) {
	if o == nil {
		return
	}
	rec := o.s.relays.lookupAdvertised("udp", relay)
	if rec == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	a := o.allocFor(rec, client, listen)
	if a == nil {
		return
	}
	if bound {
		p := addrPortOf(peer)
		a.channels[num] = p
		if a.byIP[p.Addr()] == nil {
			a.byIP[p.Addr()] = map[uint16]bool{}
		}
		a.byIP[p.Addr()][num] = true
		o.reconcileLocked(a, num)
		return
	}
	if a.bound[num] {
		_ = o.off.Unbind(a.binding(num))
		delete(a.bound, num)
	}
	if p, ok := a.channels[num]; ok {
		if delete(a.byIP[p.Addr()], num); len(a.byIP[p.Addr()]) == 0 {
			delete(a.byIP, p.Addr())
		}
		delete(a.channels, num)
	}
}

// permission follows pion's permission events: a channel whose peer's permission expired
// leaves the kernel (and returns when a ChannelBind refresh makes a new permission).
func (o *offloader) permission(relay, client, listen net.Addr, peer net.IP, created bool) {
	if o == nil {
		return
	}
	rec := o.s.relays.lookupAdvertised("udp", relay)
	ip, ok := netip.AddrFromSlice(peer)
	if rec == nil || !ok {
		return
	}
	ip = ip.Unmap()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	a := o.allocFor(rec, client, listen)
	if a == nil {
		return
	}
	if created {
		a.perms[ip] = true
	} else {
		delete(a.perms, ip)
	}
	// Only this IP's channels: a client with thousands of channels to as many peers must
	// not make each permission event cost thousands of steps under o.mu.
	for num := range a.byIP[ip] {
		o.reconcileLocked(a, num)
	}
}

// reconcile re-checks every channel against the peer filter a reload just committed:
// denied peers leave the kernel (user space then drops their packets per packet), peers
// the new filter allows again return to it.
func (o *offloader) reconcile() {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	// Every binding the kernel holds was installed here (reconcileLocked), so going through
	// the allocations' channels re-checks each of them (what off.Bindings() would list), and
	// also finds the ones the new filter allows again.
	for _, a := range o.allocs {
		for num := range a.channels {
			o.reconcileLocked(a, num)
		}
	}
}

// allocationDeleted removes rec's allocation from the kernel and adds what the kernel
// relayed since the last sync to rec (for the deletion log line) and the metrics.
func (o *offloader) allocationDeleted(rec *relayRecord) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.allocs[rec]
	if a == nil || o.closed {
		return
	}
	delete(o.allocs, rec)
	delete(o.ids, a.id)
	final, err := o.off.RemoveAllocation(a.id)
	if err != nil {
		o.s.log.Debug("turn xdp offload: remove allocation", "err", err.Error())
	}
	o.accountLocked(rec, a, final)
}

// close detaches the program after a last sync. The server calls it once pion has closed
// every allocation (whose final counters allocationDeleted took).
func (o *offloader) close() error {
	if o == nil {
		return nil
	}
	close(o.stop)
	<-o.done
	o.sync()
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	return o.off.Close()
}
