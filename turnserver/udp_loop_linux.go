//go:build linux

package turnserver

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"icehub/turnserver/internal/stunwire"
	"icehub/turnserver/internal/udploop"
)

const udploopSupported = true

// loopListener is a UDP listen socket served by a udploop.Loop together with the relay
// sockets of its clients. The loop relays ChannelData of allocations and channels it knows
// (client → peer out of the relay socket, peer → client framed in place and batched on this
// socket) and answers plain Binding requests itself; pion gets every other datagram through
// ReadFrom (client side) or loopRelay.ReadFrom (peer side). What the loop knows is mirrored
// from pion's allocation and channel events, so pion stays the authority: the loop only ever
// does what pion would have done, minus the decoding, locking and logging.
type loopListener struct {
	adm     *admission
	sock    *udploop.Socket
	loop    *udploop.Loop
	local   net.Addr
	clients clientTable
	toPion  chan pionPacket // datagrams for pion's read loop
	done    chan struct{}   // closed by Close
	once    sync.Once

	// out is the round's batch while admission runs in Listener (scratch and reply use it).
	out *udploop.Out

	// Counted on the loop goroutine and added to the shared metrics once per round.
	bindings, unanswered, toPeer, toPeerBytes, toClient, toClientBytes uint64
	capPkts, capBytes                                                  [2][2]uint64 // by direction and capLimit-1
	now                                                                time.Time    // of this round, read once
	pol                                                                *policy      // of this round, loaded once
}

// roundTime is the time of the current round, read from the clock once per round.
func (l *loopListener) roundTime() time.Time {
	if l.now.IsZero() {
		l.now = l.adm.s.now()
	}
	return l.now
}

// roundPolicy is the policy in force for the current round, loaded once per round.
func (l *loopListener) roundPolicy() *policy {
	if l.pol == nil {
		l.pol = l.adm.s.policy.Load()
	}
	return l.pol
}

// roundCaps charges a datagram the loop relays against the caps of this round's policy and
// counts a drop for RoundDone; true: relay it.
func (l *loopListener) roundCaps(rec *relayRecord, d direction, n int) bool {
	pol := l.roundPolicy()
	if !pol.capsBitrate() {
		return true
	}
	lim := l.adm.s.checkCaps(pol, rec, d, n, capClock(l.roundTime()))
	if lim == capNone {
		return true
	}
	l.capPkts[d][lim-1]++
	l.capBytes[d][lim-1] += uint64(n)
	return false
}

// Queue bounds: beyond them datagrams for pion are dropped, as a full socket buffer would.
const (
	listenerQueue = 1024
	relayQueue    = 32
)

func newLoopListener(pc *net.UDPConn, adm *admission) (*loopListener, error) {
	local := pc.LocalAddr()
	sock, err := udploop.TakeConn(pc)
	if err != nil {
		return nil, err
	}
	l := &loopListener{adm: adm, sock: sock, local: local,
		toPion: make(chan pionPacket, listenerQueue), done: make(chan struct{})}
	if l.loop, err = udploop.New(sock, l); err != nil {
		sock.Close()
		return nil, err
	}
	return l, nil
}

// Listener implements udploop.Handler for client datagrams: ChannelData on a known channel
// and plain Bindings are served here; everything else passes admission here too — so a flood
// of requests is answered (or dropped) in the loop's batches without a copy or a hand-off —
// and what admission lets through is queued for pion.
func (l *loopListener) Listener(pkt []byte, src netip.AddrPort, out *udploop.Out) {
	if stunwire.IsChannelData(pkt) {
		if l.relayChannelData(pkt, src) {
			return
		}
		queueForPion(l.toPion, pkt, src) // pion looks the channel up; nothing to admit
		return
	}
	h, ok := stunwire.ParseHeader(pkt)
	if !ok {
		return
	}
	if h.Type == stunwire.MessageType(stunwire.MethodBinding, stunwire.ClassRequest) && stunwire.PlainBinding(pkt, h) {
		// An unauthenticated answer: within the source's credit, like admission's.
		if l.adm.credit.Spend(src, l.roundTime(), len(pkt), bindingAnswerLen(src.Addr())) {
			l.bindings++
			out.Send(stunwire.AppendBindingSuccess(out.ReplyBuf(), pkt, src), src)
		} else {
			l.unanswered++
		}
		return
	}
	l.out = out
	admitted, ok := l.adm.admit(pkt, net.UDPAddrFromAddrPort(src), l)
	l.out = nil
	if ok {
		queueForPion(l.toPion, admitted, src)
	}
}

// relayChannelData sends a client's ChannelData out of its relay when the allocation and
// channel are known (true); otherwise pion gets it (and drops what is unknown or invalid).
func (l *loopListener) relayChannelData(pkt []byte, src netip.AddrPort) bool {
	num, payload, ok := stunwire.ParseChannelData(pkt)
	if !ok {
		return false
	}
	a := l.clients.get(src)
	if a == nil {
		return false
	}
	peer, found := a.peerOf(num)
	if !found {
		return false
	}
	if !l.roundCaps(a.relay.rec, toPeer, len(payload)) {
		return true // over a bitrate cap: dropped, counted
	}
	if a.relay.sendToPeer(payload, peer) {
		l.toPeer++
		l.toPeerBytes += uint64(len(payload))
	}
	return true
}

// Socket implements udploop.Handler for datagrams from peers to a relay socket.
func (l *loopListener) Socket(s *udploop.Socket, buf []byte, n int, src netip.AddrPort, out *udploop.Out) {
	r := s.Tag.(*loopRelay)
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	if !l.adm.s.sendDecision(&r.inCache, src).ok {
		return // a peer the filter refuses (since a reload, say) reaches nobody either way
	}
	r.rec.bytesToClient.Add(uint64(n))
	r.rec.pktsToClient.Add(1)
	l.toClient++
	l.toClientBytes += uint64(n)
	if a := r.alloc.Load(); a != nil {
		if num := a.channelFor(src); num != 0 {
			if l.roundCaps(r.rec, toClient, n) {
				out.Send(buf[:stunwire.PutChannelHeader(buf, num, n)], a.client)
			}
			return
		}
	}
	// pion checks the permission, frames a Data indication and writes it through WriteTo,
	// where the caps apply.
	queueForPion(r.toPion, buf[udploop.Headroom:udploop.Headroom+n], src)
}

// RoundDone implements udploop.Handler: the round's counts go to the shared metrics at once,
// so the hot path does not contend on them per packet.
func (l *loopListener) RoundDone() {
	m := l.adm.s.m
	if l.bindings > 0 {
		m.bindings.Add(float64(l.bindings))
	}
	if l.unanswered > 0 {
		m.unauthDrop.Add(float64(l.unanswered))
	}
	if l.toPeer > 0 {
		m.pktToPeer.Add(float64(l.toPeer))
		m.byteToPeer.Add(float64(l.toPeerBytes))
	}
	if l.toClient > 0 {
		m.pktToClient.Add(float64(l.toClient))
		m.byteToClient.Add(float64(l.toClientBytes))
	}
	for d := range l.capPkts {
		for i, pkts := range l.capPkts[d] {
			if pkts > 0 {
				m.capDropped(direction(d), capLimit(i+1), int(pkts), int(l.capBytes[d][i]))
			}
		}
	}
	l.bindings, l.unanswered, l.toPeer, l.toPeerBytes, l.toClient, l.toClientBytes = 0, 0, 0, 0, 0, 0
	l.capPkts, l.capBytes = [2][2]uint64{}, [2][2]uint64{}
	l.now, l.pol = time.Time{}, nil
}

func queueForPion(q chan pionPacket, b []byte, src netip.AddrPort) {
	select {
	case q <- pionPacket{b: append([]byte(nil), b...), src: src}:
	default: // pion is behind: drop, as a full socket buffer would
	}
}

// ReadFrom is pion's read loop: the datagrams the loop admitted but did not handle.
func (l *loopListener) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		select {
		case pkt := <-l.toPion:
			if len(pkt.b) < len(b) {
				return copy(b, pkt.b), net.UDPAddrFromAddrPort(pkt.src), nil
			}
		case <-l.done:
			return 0, nil, net.ErrClosed
		}
	}
}

// WriteTo is pion's: its unauthenticated answers pass admission's outgoing rewrite, and the
// data it relays to a client (Data indications, ChannelData of a channel the loop does not
// know yet) the bitrate caps.
func (l *loopListener) WriteTo(b []byte, addr net.Addr) (int, error) {
	if !l.adm.s.frameWithinCaps(l.recOf(addr), b) {
		return len(b), nil // over a cap: dropped, counted
	}
	if err := l.send(l.adm.outgoing(b, addr), addr); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (l *loopListener) send(b []byte, addr net.Addr) error {
	u, ok := addr.(*net.UDPAddr)
	if !ok {
		return udploop.ErrFamily
	}
	return l.sock.Send(b, u.AddrPort())
}

// scratch and reply serve admission when it runs in Listener: answers join the round's
// batch. Outside Listener (never, today) they fall back to a plain send.
func (l *loopListener) scratch() []byte {
	if l.out != nil {
		return l.out.ReplyBuf()
	}
	return make([]byte, 0, answerMax)
}

func (l *loopListener) reply(b []byte, to net.Addr) {
	u, ok := to.(*net.UDPAddr)
	if !ok {
		return
	}
	if l.out == nil || len(b) > udploop.ReplyMax {
		_ = l.sock.Send(b, u.AddrPort())
		return
	}
	rb := l.out.ReplyBuf()[:len(b)]
	copy(rb, b) // b may be rb itself, built in scratch
	l.out.Send(rb, u.AddrPort())
}

// recOf returns the relay of the allocation of the client at addr on this socket, or nil;
// only under a bitrate cap, the only time it is needed.
func (l *loopListener) recOf(addr net.Addr) *relayRecord {
	u, ok := addr.(*net.UDPAddr)
	if !ok || !l.adm.s.policy.Load().capsBitrate() {
		return nil
	}
	if a := l.clients.get(u.AddrPort()); a != nil {
		return a.relay.rec
	}
	return nil
}

func (l *loopListener) LocalAddr() net.Addr { return l.local }

// Deadlines: pion sets none on its listeners; the loop's reads have nothing to time out.
func (l *loopListener) SetDeadline(time.Time) error      { return nil }
func (l *loopListener) SetReadDeadline(time.Time) error  { return nil }
func (l *loopListener) SetWriteDeadline(time.Time) error { return nil }

// Close stops the loop, then closes the socket; pion's read loop then ends.
func (l *loopListener) Close() error {
	l.once.Do(func() {
		l.loop.Close()
		l.sock.Close()
		close(l.done)
	})
	return nil
}

func (l *loopListener) openRelay(network string, rec *relayRecord) (net.PacketConn, bool, error) {
	sock, err := udploop.Listen(network, rec.bind)
	if err != nil {
		return nil, true, err
	}
	r := &loopRelay{sock: sock, lst: l, local: net.UDPAddrFromAddrPort(rec.bind), rec: rec,
		toPion: make(chan pionPacket, relayQueue)}
	sock.Tag = r
	if err := l.loop.Add(sock); err != nil {
		sock.Close()
		return nil, false, err
	}
	return r, false, nil
}

func (l *loopListener) allocationCreated(client net.Addr, rec *relayRecord) {
	r, ok := rec.conn.(*loopRelay)
	u, isUDP := client.(*net.UDPAddr)
	if !ok || !isUDP {
		return
	}
	a := &clientAllocation{client: u.AddrPort(), relay: r}
	l.clients.put(a)
	r.alloc.Store(a)
}

func (l *loopListener) allocationDeleted(rec *relayRecord) {
	if r, ok := rec.conn.(*loopRelay); ok {
		if a := r.alloc.Swap(nil); a != nil {
			l.clients.remove(a)
		}
	}
}

func (l *loopListener) channelChanged(rec *relayRecord, peer netip.AddrPort, num uint16, bound bool) {
	if r, ok := rec.conn.(*loopRelay); ok {
		if a := r.alloc.Load(); a != nil {
			a.setChannel(num, peer, bound)
		}
	}
}
