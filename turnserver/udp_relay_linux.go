//go:build linux

package turnserver

import (
	"icehub/turnserver/internal/stunwire"
	"icehub/turnserver/internal/udploop"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// loopRelay is a UDP relay socket served by its listener's loop. For pion it is a
// net.PacketConn: ReadFrom returns the datagrams the loop did not relay itself (from peers
// without a channel, for Data indications), WriteTo sends to a peer after the per-packet
// peer check.
type loopRelay struct {
	sock  *udploop.Socket
	lst   *loopListener
	local *net.UDPAddr
	rec   *relayRecord
	alloc atomic.Pointer[clientAllocation]
	cache atomic.Pointer[sendDecision] // the last peer sent to
	// inCache is the last peer received from: the filter applies to what peers send too.
	inCache atomic.Pointer[sendDecision]
	toPion  chan pionPacket
	once    sync.Once
	// closeMu keeps Close from closing toPion under receiveFromOwnRelay, which other relays
	// call from their own goroutines (the loop's sends are covered by the loop's lock).
	closeMu sync.RWMutex
	closed  bool
}

func (r *loopRelay) ReadFrom(p []byte) (int, net.Addr, error) {
	pkt, ok := <-r.toPion
	if !ok {
		return 0, nil, net.ErrClosed
	}
	return copy(p, pkt.b), net.UDPAddrFromAddrPort(pkt.src), nil
}

func (r *loopRelay) WriteTo(p []byte, addr net.Addr) (int, error) {
	if !r.lst.adm.s.withinCaps(r.rec, toPeer, len(p)) {
		return len(p), nil // over a bitrate cap: dropped, counted
	}
	if r.sendToPeer(p, addrPortOf(addr)) {
		r.lst.adm.s.m.pktToPeer.Inc()
		r.lst.adm.s.m.byteToPeer.Add(float64(len(p)))
	}
	return len(p), nil // a datagram refused or lost is dropped like any; the client was told 403 at permission time
}

// sendToPeer is the loop's WriteTo: peer is unmapped and nothing is allocated (but for a
// peer that is one of this server's relays). It counts the allocation's own figures and
// reports whether it sent, so the loop can add the shared counters once per round.
func (r *loopRelay) sendToPeer(p []byte, peer netip.AddrPort) bool {
	d := r.lst.adm.s.sendDecision(&r.cache, peer)
	if !d.ok {
		return false
	}
	if d.own != nil && d.own != r.rec {
		if !deliverToOwnRelay(d.own, p, r.rec.advertised) {
			return false
		}
	} else if r.sock.Send(p, peer) != nil {
		return false
	}
	r.rec.bytesToPeer.Add(uint64(len(p)))
	r.rec.pktsToPeer.Add(1)
	return true
}

// receiveFromOwnRelay takes a datagram another relay of this server sent to this one, as the
// loop takes one from the socket: framed for the client when its channel is bound, else
// handed to pion (which checks the allocation's permissions).
func (r *loopRelay) receiveFromOwnRelay(payload []byte, from netip.AddrPort) {
	r.rec.countToClient(r.lst.adm.s.m, len(payload))
	if a := r.alloc.Load(); a != nil {
		if num := a.channelFor(from); num != 0 {
			if !r.lst.adm.s.withinCaps(r.rec, toClient, len(payload)) {
				return
			}
			buf := make([]byte, stunwire.ChannelHeaderLen+len(payload)+3)
			copy(buf[stunwire.ChannelHeaderLen:], payload)
			_ = r.lst.sock.Send(buf[:stunwire.PutChannelHeader(buf, num, len(payload))], a.client)
			return
		}
	}
	r.closeMu.RLock()
	if !r.closed {
		queueForPion(r.toPion, payload, from)
	}
	r.closeMu.RUnlock()
}

func (r *loopRelay) Close() error {
	r.once.Do(func() {
		if a := r.alloc.Swap(nil); a != nil {
			r.lst.clients.remove(a)
		}
		r.lst.loop.Remove(r.sock)
		r.closeMu.Lock()
		r.closed = true
		close(r.toPion) // the loop no longer serves r, and own relays see closed
		r.closeMu.Unlock()
		r.lst.adm.s.releaseRelay(r.rec)
	})
	return nil
}

func (r *loopRelay) LocalAddr() net.Addr { return r.local }

func (r *loopRelay) SetDeadline(time.Time) error { return nil }

func (r *loopRelay) SetReadDeadline(time.Time) error { return nil }

func (r *loopRelay) SetWriteDeadline(time.Time) error { return nil }
