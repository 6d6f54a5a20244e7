package turnserver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// relayLoop serves one UDP listener socket and the relay sockets of its clients the way
// coturn's event loops do: one epoll set and one goroutine instead of a read loop per
// socket and a goroutine per allocation. A round reads what every ready socket has:
// ChannelData from a client on a known channel goes straight out of its relay socket; a
// plain Binding request is answered; a datagram from a peer with a bound channel is framed
// as ChannelData in place. The round's answers and ChannelData leave in one sendmmsg on the
// listener socket. Everything else is handed to pion: the listener's datagrams to its read
// loop (gatedPacketConn.ReadFrom), a relay's to the allocation's goroutine (loopRelay.ReadFrom).
//
// The epoll descriptor itself sits in Go's poller, so the loop goroutine parks like any
// network read while nothing is ready and no thread blocks in epoll_wait.
type relayLoop struct {
	c    *core
	lst  *gatedPacketConn
	lfd  uintptr // the listener socket
	lv6  bool    // listener is an IPv6 socket
	epfd int
	ep   *os.File
	rc   syscall.RawConn

	mu     sync.RWMutex
	relays map[int32]*loopRelay
	closed bool

	events  []unix.EpollEvent
	nev     int
	rx      *mmsgBatch // receive slots; relayed ChannelData is sent from them in place
	tx      *mmsgBatch // headers only: point at rx buffers or answers, addressed to clients
	answers [][bindingResponseMax]byte
	used    int // rx slots holding a datagram until the flush
	pending int // tx slots filled
	waitFn  func(fd uintptr) bool
	done    chan struct{}
}

// loopBatch is how many datagrams one flush of the loop sends at most.
const loopBatch = 64

// perRelayRead bounds one relay's share of a round, so a busy allocation cannot starve the
// rest; the listener gets listenerRead per round.
const (
	perRelayRead = 16
	listenerRead = 4 * loopBatch
)

// inboundMTU is pion's: a datagram this long or longer may have been truncated; pion drops it.
const inboundMTU = 1600

func newRelayLoop(c *core, lst *gatedPacketConn) (*relayLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lst.sock.fd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, lst.sock.fd, &ev); err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	ep := os.NewFile(uintptr(epfd), "relay-epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil, err
	}
	l := &relayLoop{
		c: c, lst: lst, lfd: uintptr(lst.sock.fd), lv6: lst.sock.v6, epfd: epfd, ep: ep, rc: rc,
		relays:  make(map[int32]*loopRelay),
		events:  make([]unix.EpollEvent, loopBatch),
		rx:      newMmsgBatch(loopBatch, rxBufSize),
		tx:      newMmsgBatch(loopBatch, 0),
		answers: make([][bindingResponseMax]byte, loopBatch),
		done:    make(chan struct{}),
	}
	l.waitFn = l.wait
	go l.run()
	return l, nil
}

// wait is the RawConn read callback: a non-blocking epoll_wait; false parks the goroutine
// until the epoll descriptor is readable.
func (l *relayLoop) wait(fd uintptr) bool {
	// Raw and with timeout 0: it never blocks; Go's poller does the waiting.
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
	switch {
	case e == unix.EINTR:
		return l.wait(fd)
	case e != 0:
		return true // the run loop sees nev 0 and tries again; a closed epoll fails in Read
	case r == 0:
		return false
	}
	l.nev = int(r)
	return true
}

func (l *relayLoop) run() {
	defer close(l.done)
	for {
		l.nev = 0
		if err := l.rc.Read(l.waitFn); err != nil {
			return // closed
		}
		l.mu.RLock()
		for i := 0; i < l.nev; i++ {
			fd := l.events[i].Fd
			if uintptr(fd) == l.lfd {
				l.serveListener()
			} else if r := l.relays[fd]; r != nil {
				l.serve(r)
			}
		}
		l.mu.RUnlock()
		l.flush()
	}
}

// serveListener reads client datagrams. l.mu is read-locked.
func (l *relayLoop) serveListener() {
	var toPeer, toPeerBytes, bindings uint64
	defer func() {
		if bindings > 0 {
			l.c.m.bindings.Add(float64(bindings))
		}
		if toPeer > 0 {
			l.c.m.pktToPeer.Add(float64(toPeer))
			l.c.m.byteToPeer.Add(float64(toPeerBytes))
		}
	}()
	for budget := listenerRead; budget > 0; {
		if l.used == loopBatch {
			l.flush()
		}
		k := min(budget, loopBatch-l.used)
		for i := l.used; i < l.used+k; i++ {
			l.rx.armRecv(i, l.rx.bufs[i])
		}
		n, e := l.rx.recvmmsg(l.lfd, l.used, k)
		if e != 0 || n == 0 {
			return
		}
		for i := l.used; i < l.used+n; i++ {
			size := int(l.rx.hdrs[i].n)
			if size >= inboundMTU {
				continue // possibly truncated: pion drops these too
			}
			b := l.rx.bufs[i][:size]
			src := sockaddrAddrPort(&l.rx.names[i])
			if isChannelData(b) {
				if sent, ok := l.lst.fastChannelData(b, src); ok {
					if sent > 0 {
						toPeer++
						toPeerBytes += uint64(sent)
					}
					continue
				}
			} else if h, ok := parseSTUNHeader(b); ok && h.typ == 0x0001 && plainBinding(b, h) {
				bindings++
				t := l.pending
				resp := appendBindingResponse(l.answers[t][:0], b, src)
				l.tx.iovs[t].Base = &resp[0]
				l.tx.iovs[t].SetLen(len(resp))
				l.tx.setName(t, src, l.lv6)
				l.pending++
				continue
			}
			l.lst.handOff(b, src)
		}
		l.used += n
		budget -= n
		if n < k {
			return // drained
		}
	}
}

// serve reads what one relay socket has (up to its share) and relays or hands it on.
// l.mu is read-locked, so the relay cannot be closed meanwhile.
func (l *relayLoop) serve(r *loopRelay) {
	a := r.fa.Load()
	for budget := perRelayRead; budget > 0; {
		if l.used == loopBatch {
			l.flush()
		}
		k := min(budget, loopBatch-l.used)
		for i := l.used; i < l.used+k; i++ {
			l.rx.armRecv(i, l.rx.bufs[i][chanHeaderLen:])
		}
		n, e := l.rx.recvmmsg(uintptr(r.fd), l.used, k)
		if e != 0 || n == 0 {
			return
		}
		var bytes uint64
		for i := l.used; i < l.used+n; i++ {
			size := int(l.rx.hdrs[i].n)
			bytes += uint64(size)
			if size >= rxBufSize-chanHeaderLen {
				continue // truncated
			}
			src := sockaddrAddrPort(&l.rx.names[i])
			src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
			if a != nil {
				if num := a.chanOf(src); num != 0 {
					buf := l.rx.bufs[i]
					frame := frameChannelData(buf, num, size)
					t := l.pending
					l.tx.iovs[t].Base = &buf[0]
					l.tx.iovs[t].SetLen(frame)
					l.tx.setName(t, a.client, l.lv6)
					l.pending++
					continue
				}
			}
			r.handOff(l.rx.bufs[i][chanHeaderLen:chanHeaderLen+size], src)
		}
		r.rec.countToClientN(l.c.m, n, bytes)
		l.used += n
		budget -= n
		if n < k {
			return // drained
		}
	}
}

// flush sends the round's answers and ChannelData to the clients and frees the slots.
func (l *relayLoop) flush() {
	if l.pending > 0 {
		l.tx.sendAll(l.lfd, l.pending)
	}
	l.pending, l.used = 0, 0
}

// add registers a relay socket with the loop.
func (l *relayLoop) add(r *loopRelay) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return net.ErrClosed
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(r.fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, r.fd, &ev); err != nil {
		return err
	}
	l.relays[int32(r.fd)] = r
	return nil
}

// remove unregisters and closes a relay socket; the loop is not using it afterwards.
func (l *relayLoop) remove(r *loopRelay) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.relays[int32(r.fd)] == r {
		delete(l.relays, int32(r.fd))
	}
	// Closing the socket takes it out of the epoll set (nothing dups it), so no
	// EPOLL_CTL_DEL: one syscall less per allocation. An event the loop already holds for
	// this descriptor finds no relay under it in l.relays.
	r.rawSock.close()
}

// close stops the loop (before the listener socket it sends on is closed).
func (l *relayLoop) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	_ = l.ep.Close()
	<-l.done
}

// rawSock is a non-blocking UDP socket outside Go's poller. Senders hold mu read-locked so
// the descriptor cannot be closed (and its number reused) under them.
type rawSock struct {
	fd     int
	v6     bool
	mu     sync.RWMutex
	closed bool
}

// send sends one datagram to ap without blocking; a full socket buffer drops it, as UDP may.
func (s *rawSock) send(p []byte, ap netip.AddrPort) error {
	if !s.v6 && !ap.Addr().Unmap().Is4() {
		return errFamily
	}
	var raw unix.RawSockaddrInet6
	n := putSockaddr(&raw, ap, s.v6)
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return net.ErrClosed
	}
	var e unix.Errno
	for {
		// Raw: a non-blocking send of one datagram needs no scheduler hand-off.
		_, _, e = unix.RawSyscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(ptr), uintptr(len(p)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&raw)), uintptr(n))
		if e != unix.EINTR {
			break
		}
	}
	s.mu.RUnlock()
	switch e {
	case 0, unix.EAGAIN:
		return nil
	default:
		return fmt.Errorf("sendto %s: %w", ap, e)
	}
}

func (s *rawSock) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		_ = unix.Close(s.fd)
	}
}

// loopRelay is a UDP relay socket served by a relayLoop. It is a net.PacketConn for pion:
// ReadFrom returns the datagrams the loop did not relay itself (from peers without a
// channel, for Data indications), WriteTo sends to a peer after the per-packet filter.
type loopRelay struct {
	rawSock
	local *net.UDPAddr
	loop  *relayLoop
	c     *core
	rec   *relayRec
	fa    atomic.Pointer[fastAlloc]
	cache atomic.Pointer[sendDecision]
	slow  chan slowPacket
	once  sync.Once
}

type slowPacket struct {
	b   []byte
	src netip.AddrPort
}

// slowQueue bounds what waits for pion's goroutine; beyond it datagrams are dropped.
const slowQueue = 32

var errFamily = errors.New("address family mismatch")

// listenLoopRelay binds a non-blocking UDP socket on bind outside Go's poller.
func listenLoopRelay(network string, bind netip.AddrPort) (int, error) {
	fam := unix.AF_INET
	if network == "udp6" {
		fam = unix.AF_INET6
	}
	if (fam == unix.AF_INET) != bind.Addr().Is4() {
		return -1, errFamily
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var sa unix.Sockaddr
	if fam == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(bind.Port()), Addr: bind.Addr().As4()}
	} else {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		sa = &unix.SockaddrInet6{Port: int(bind.Port()), Addr: bind.Addr().As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		_ = unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func newLoopRelay(l *relayLoop, fd int, bind netip.AddrPort, rec *relayRec) (*loopRelay, error) {
	r := &loopRelay{
		rawSock: rawSock{fd: fd, v6: bind.Addr().Is6()},
		local:   net.UDPAddrFromAddrPort(bind), loop: l, c: l.c, rec: rec,
		slow: make(chan slowPacket, slowQueue),
	}
	if err := l.add(r); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return r, nil
}

// handOff queues a datagram for pion's goroutine (a copy: the loop reuses its buffers).
func (r *loopRelay) handOff(b []byte, src netip.AddrPort) {
	select {
	case r.slow <- slowPacket{b: append([]byte(nil), b...), src: src}:
	default: // pion is behind: drop, as a full socket buffer would
	}
}

func (r *loopRelay) ReadFrom(p []byte) (int, net.Addr, error) {
	pkt, ok := <-r.slow
	if !ok {
		return 0, nil, net.ErrClosed
	}
	return copy(p, pkt.b), net.UDPAddrFromAddrPort(pkt.src), nil
}

// allowed is the per-packet peer check, cached for the last peer.
func (r *loopRelay) allowed(peer netip.AddrPort) bool {
	return sendAllowedCached(r.c, &r.cache, "udp", peer)
}

func (r *loopRelay) WriteTo(p []byte, addr net.Addr) (int, error) {
	peer := addrPortOf(addr)
	if !r.allowed(peer) {
		return len(p), nil // dropped like any datagram; the client was told 403 at permission time
	}
	if err := r.send(p, peer); err != nil {
		return 0, err
	}
	return len(p), nil
}

// sendToPeer is the fast path's WriteTo: peer is unmapped; nothing is allocated. It counts
// the allocation's own figures and reports whether it sent, so the loop can add the
// server-wide (shared, so contended) counters once per round.
func (r *loopRelay) sendToPeer(p []byte, peer netip.AddrPort) bool {
	if !r.allowed(peer) || r.rawSock.send(p, peer) != nil {
		return false
	}
	r.rec.bytesToPeer.Add(uint64(len(p)))
	r.rec.pktsToPeer.Add(1)
	return true
}

func (r *loopRelay) send(p []byte, peer netip.AddrPort) error {
	if err := r.rawSock.send(p, peer); err != nil {
		return err
	}
	r.rec.countToPeer(r.c.m, len(p))
	return nil
}

func (r *loopRelay) Close() error {
	r.once.Do(func() {
		if a := r.fa.Swap(nil); a != nil {
			a.lst.fast.remove(a)
		}
		r.loop.remove(r)
		close(r.slow) // the loop no longer serves r, so nothing sends on slow any more
		r.c.releaseRelay(r.rec)
	})
	return nil
}

func (r *loopRelay) LocalAddr() net.Addr              { return r.local }
func (r *loopRelay) SetDeadline(time.Time) error      { return nil }
func (r *loopRelay) SetReadDeadline(time.Time) error  { return nil }
func (r *loopRelay) SetWriteDeadline(time.Time) error { return nil }
