package turnserver

import (
	"encoding/binary"
	"hash/crc32"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/stun/v4"
)

// The fast path relays ChannelData and answers Binding requests on UDP without pion: pion
// decodes every datagram into fresh objects, takes several locks and formats log arguments,
// which costs more than the socket calls themselves. The state it needs is mirrored from
// pion's event callbacks (allocation, channel created and deleted); anything the fast path
// does not know — a packet for an allocation or channel it has not seen, Send and Data
// indications, every other request — still goes to pion, so pion stays the authority and
// the fast path only ever does what pion would have done.

// fastChan is one bound channel of an allocation.
type fastChan struct {
	num  uint16
	peer netip.AddrPort // unmapped
}

// fastAlloc is one UDP allocation the fast path relays for: the client's 5-tuple (its
// address on one listener socket), the relay socket and the bound channels.
type fastAlloc struct {
	client netip.AddrPort // as the listener socket reports it (not unmapped)
	lst    *gatedPacketConn
	relay  *loopRelay

	mu    sync.Mutex                 // serialises channel updates
	chans atomic.Pointer[[]fastChan] // immutable; replaced on change
}

// peerOf returns the peer bound to channel num.
func (a *fastAlloc) peerOf(num uint16) (netip.AddrPort, bool) {
	if cs := a.chans.Load(); cs != nil {
		for i := range *cs {
			if c := &(*cs)[i]; c.num == num {
				return c.peer, true
			}
		}
	}
	return netip.AddrPort{}, false
}

// chanOf returns the channel bound to peer, 0 when none is.
func (a *fastAlloc) chanOf(peer netip.AddrPort) uint16 {
	if cs := a.chans.Load(); cs != nil {
		for i := range *cs {
			if c := &(*cs)[i]; c.peer == peer {
				return c.num
			}
		}
	}
	return 0
}

func (a *fastAlloc) setChan(num uint16, peer netip.AddrPort, bound bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var next []fastChan
	if cs := a.chans.Load(); cs != nil {
		for _, c := range *cs {
			if c.num != num {
				next = append(next, c)
			}
		}
	}
	if bound {
		next = append(next, fastChan{num: num, peer: peer})
	}
	a.chans.Store(&next)
}

// fastTable maps client addresses on one listener socket to their allocations.
type fastTable struct {
	mu sync.RWMutex
	m  map[netip.AddrPort]*fastAlloc
}

func (t *fastTable) get(ap netip.AddrPort) *fastAlloc {
	t.mu.RLock()
	a := t.m[ap]
	t.mu.RUnlock()
	return a
}

func (t *fastTable) put(a *fastAlloc) {
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[netip.AddrPort]*fastAlloc)
	}
	t.m[a.client] = a
	t.mu.Unlock()
}

func (t *fastTable) remove(a *fastAlloc) {
	t.mu.Lock()
	if t.m[a.client] == a {
		delete(t.m, a.client)
	}
	t.mu.Unlock()
}

// udpAddrPort is the AddrPort of a net.Addr exactly as given (a UDP address keeps its
// 4-in-6 form so it matches what the socket reports).
func udpAddrPort(a net.Addr) (netip.AddrPort, bool) {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	return u.AddrPort(), true
}

// fastAllocCreated registers a UDP allocation pion created on one of our listener sockets.
func (c *core) fastAllocCreated(src net.Addr, r *relayRec) {
	if r == nil || r.conn == nil || r.owner == nil {
		return // TCP client or TCP relay: pion relays
	}
	ap, ok := udpAddrPort(src)
	if !ok {
		return
	}
	a := &fastAlloc{client: ap, lst: r.owner, relay: r.conn}
	r.owner.fast.put(a)
	r.conn.fa.Store(a)
}

func (c *core) fastAllocDeleted(r *relayRec) {
	if r == nil || r.conn == nil {
		return
	}
	if a := r.conn.fa.Swap(nil); a != nil {
		a.lst.fast.remove(a)
	}
}

// fastChannel mirrors a channel pion bound (bound) or unbound on the allocation of relay.
func (c *core) fastChannel(relay, peer net.Addr, num uint16, bound bool) {
	r := c.relays.lookupAdv("udp", relay)
	if r == nil || r.conn == nil {
		return
	}
	a := r.conn.fa.Load()
	if a == nil {
		return
	}
	a.setChan(num, addrPortOf(peer), bound)
}

// fastChannelData relays a client's ChannelData datagram b from src when the fast path knows
// the allocation and channel (ok); otherwise pion gets it (and drops what is unknown or
// invalid). sent is the payload length when it went out, 0 when the peer filter (or the
// socket) dropped it; the caller adds it to the server-wide counters.
func (p *gatedPacketConn) fastChannelData(b []byte, src netip.AddrPort) (sent int, ok bool) {
	num := binary.BigEndian.Uint16(b[0:2])
	l := int(binary.BigEndian.Uint16(b[2:4]))
	if num > 0x7FFF || chanHeaderLen+l > len(b) {
		return 0, false
	}
	a := p.fast.get(src)
	if a == nil {
		return 0, false
	}
	peer, found := a.peerOf(num)
	if !found {
		return 0, false
	}
	if a.relay.sendToPeer(b[chanHeaderLen:chanHeaderLen+l], peer) {
		return l, true
	}
	return 0, true
}

// bindingResponseMax is the largest Binding success response: header, XOR-MAPPED-ADDRESS
// for IPv6, FINGERPRINT.
const bindingResponseMax = stunHeaderLen + 4 + 20 + 8

// appendBindingResponse writes the Binding success response to request req (whose header
// parseSTUNHeader accepted) from src into out (cap ≥ bindingResponseMax): XOR-MAPPED-ADDRESS
// and FINGERPRINT, as pion answers.
func appendBindingResponse(out, req []byte, src netip.AddrPort) []byte {
	ip := src.Addr().Unmap()
	alen := 8
	if ip.Is6() {
		alen = 20
	}
	total := stunHeaderLen + 4 + alen + 8
	out = out[:total]
	binary.BigEndian.PutUint16(out[0:2], 0x0101) // Binding success response
	binary.BigEndian.PutUint16(out[2:4], uint16(total-stunHeaderLen))
	copy(out[4:20], req[4:20]) // magic cookie and transaction ID
	a := out[20:]
	binary.BigEndian.PutUint16(a[0:2], uint16(stun.AttrXORMappedAddress))
	binary.BigEndian.PutUint16(a[2:4], uint16(alen))
	a[4] = 0
	binary.BigEndian.PutUint16(a[6:8], src.Port()^uint16(magicCookie>>16))
	if ip.Is4() {
		a[5] = 1
		v := ip.As4()
		for i := range 4 {
			a[8+i] = v[i] ^ out[4+i]
		}
	} else {
		a[5] = 2
		v := ip.As16()
		for i := range 16 {
			a[8+i] = v[i] ^ out[4+i] // cookie then transaction ID
		}
	}
	f := out[total-8:]
	binary.BigEndian.PutUint16(f[0:2], uint16(stun.AttrFingerprint))
	binary.BigEndian.PutUint16(f[2:4], 4)
	binary.BigEndian.PutUint32(f[4:8], crc32.ChecksumIEEE(out[:total-8])^0x5354554e)
	return out
}

// plainBinding reports whether a Binding request carries only attributes pion would accept
// without an error answer (no unknown comprehension-required attribute) and is well formed.
func plainBinding(b []byte, h stunHeader) bool {
	attrs := b[stunHeaderLen : stunHeaderLen+h.length]
	for len(attrs) > 0 {
		if len(attrs) < 4 {
			return false
		}
		t := stun.AttrType(binary.BigEndian.Uint16(attrs[0:2]))
		l := int(binary.BigEndian.Uint16(attrs[2:4]))
		padded := (l + 3) &^ 3
		if 4+padded > len(attrs) {
			return false
		}
		if t.Required() && !t.Known() {
			return false
		}
		attrs = attrs[4+padded:]
	}
	return true
}
