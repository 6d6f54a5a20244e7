//go:build linux

package udploop

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Handler decides what happens to each datagram. Its methods run on the loop's goroutine,
// one at a time, so a Handler needs no locking for state only they touch.
type Handler interface {
	// Listener is called for each datagram read from the listener socket. pkt is valid
	// until the round ends.
	Listener(pkt []byte, src netip.AddrPort, out *Out)
	// Socket is called for each datagram read from a socket added with Add. The payload is
	// buf[Headroom:Headroom+n]; buf[:Headroom] is free for a header in front of it. buf is
	// valid until the round ends.
	Socket(s *Socket, buf []byte, n int, src netip.AddrPort, out *Out)
	// RoundDone is called after each round's sends, for counters batched per round.
	RoundDone()
}

// Headroom is the space left in front of every datagram read from an added socket.
const Headroom = 4

// MaxDatagram is the largest datagram passed to a Handler; anything as long or longer may
// have been truncated by the read and is dropped (what pion's read loop does at its MTU).
const MaxDatagram = 1600

const (
	bufSize = 2048 // MaxDatagram plus Headroom, rounded up
	// roundSlots is how many datagrams one round holds before it must send: the batch size of
	// recvmmsg and sendmmsg.
	roundSlots = 64
	// listenerShare and socketShare bound what one socket may be read per readiness, so a
	// busy allocation cannot starve the others and the listener gets a fair share.
	listenerShare = 4 * roundSlots
	socketShare   = 16
)

// Loop serves a listener socket and the sockets added to it; see the package comment.
//
// Slot invariants: each datagram read takes one receive slot (rx) until the round's flush,
// and a Handler queues at most one send (tx) per datagram, either pointing into that
// datagram's own receive buffer or into the tx slot's reply buffer. So sent ≤ received ≤
// roundSlots, and a flush — which sends the tx slots and then frees every slot — is due
// when all receive slots are taken, and at the end of each round.
type Loop struct {
	h    Handler
	lst  *Socket
	epfd int
	ep   *os.File
	rc   syscall.RawConn

	mu      sync.RWMutex // read-held during a round: Remove waits for it
	sockets map[int32]*Socket
	closed  bool

	events   []unix.EpollEvent
	nev      int
	rx       *batch // receive slots
	tx       *batch // send slots: headers only
	replies  [][ReplyMax]byte
	received int // rx slots holding a datagram until the flush
	queued   int // tx slots filled
	out      Out
	waitFn   func(fd uintptr) bool
	done     chan struct{}
}

// ReplyMax is the capacity of the buffer Out.ReplyBuf returns.
const ReplyMax = 256

// New starts a loop on listener (a Socket from Listen or TakeConn); h handles the datagrams.
func New(listener *Socket, h Handler) (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(listener.fd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, listener.fd, &ev); err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	// The epoll descriptor sits in Go's poller, so the loop goroutine parks like any network
	// read while nothing is ready and no thread blocks in epoll_wait.
	ep := os.NewFile(uintptr(epfd), "udploop-epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil, err
	}
	l := &Loop{
		h: h, lst: listener, epfd: epfd, ep: ep, rc: rc,
		sockets: make(map[int32]*Socket),
		events:  make([]unix.EpollEvent, roundSlots),
		rx:      newBatch(roundSlots, bufSize),
		tx:      newBatch(roundSlots, 0),
		replies: make([][ReplyMax]byte, roundSlots),
		done:    make(chan struct{}),
	}
	l.out.l = l
	l.waitFn = l.wait
	go l.run()
	return l, nil
}

// Out queues sends on the listener socket for the current round.
type Out struct{ l *Loop }

// ReplyBuf returns an empty buffer (capacity ReplyMax) for an answer to pass to Send; it is
// valid until the round ends.
func (o *Out) ReplyBuf() []byte { return o.l.replies[o.l.queued][:0] }

// Send queues b to dst on the listener socket. b must be the datagram buffer the Handler
// was given (or a part of it) or a ReplyBuf, and a Handler may Send once per datagram.
func (o *Out) Send(b []byte, dst netip.AddrPort) {
	l := o.l
	if len(b) == 0 || l.queued >= l.received {
		return // more than one send for a datagram: refused, see the slot invariants
	}
	l.tx.setSend(l.queued, b, dst, l.lst.v6)
	l.queued++
}

// wait is the RawConn read callback: a non-blocking epoll_wait; false parks the goroutine
// until the epoll descriptor is readable.
func (l *Loop) wait(fd uintptr) bool {
	// Raw and with timeout 0: it never blocks; Go's poller does the waiting.
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
	switch {
	case e == unix.EINTR:
		return l.wait(fd)
	case e != 0:
		return true // run sees nev 0 and tries again; a closed epoll fails in Read
	case r == 0:
		return false
	}
	l.nev = int(r)
	return true
}

func (l *Loop) run() {
	defer close(l.done)
	for {
		l.nev = 0
		if err := l.rc.Read(l.waitFn); err != nil {
			return // closed
		}
		l.mu.RLock()
		for i := 0; i < l.nev; i++ {
			fd := l.events[i].Fd
			if int(fd) == l.lst.fd {
				l.drain(l.lst, listenerShare)
			} else if s := l.sockets[fd]; s != nil {
				l.drain(s, socketShare)
			}
		}
		l.mu.RUnlock()
		l.flush()
		l.h.RoundDone()
	}
}

// drain reads what s has, up to budget datagrams, and hands each to the Handler. l.mu is
// read-held, so s cannot be closed meanwhile.
func (l *Loop) drain(s *Socket, budget int) {
	listener := s == l.lst
	head := Headroom
	if listener {
		head = 0
	}
	for budget > 0 {
		if l.received == roundSlots {
			l.flush()
		}
		k := min(budget, roundSlots-l.received)
		for i := l.received; i < l.received+k; i++ {
			l.rx.armRecv(i, l.rx.bufs[i][head:])
		}
		n, e := l.rx.recvmmsg(uintptr(s.fd), l.received, k)
		if e != 0 || n == 0 {
			return
		}
		first := l.received
		for i := first; i < first+n; i++ {
			l.received = i + 1 // the datagram's slot is taken: Out.Send may queue one send for it
			size := int(l.rx.hdrs[i].msgLen[0])
			if size >= MaxDatagram {
				continue
			}
			src := sockaddrAddrPort(&l.rx.names[i])
			if listener {
				l.h.Listener(l.rx.bufs[i][:size], src, &l.out)
			} else {
				l.h.Socket(s, l.rx.bufs[i], size, src, &l.out)
			}
		}
		budget -= n
		if n < k {
			return // drained
		}
	}
}

// flush sends the queued datagrams on the listener socket and frees every slot.
func (l *Loop) flush() {
	if l.queued > 0 {
		l.tx.sendAll(uintptr(l.lst.fd), l.queued)
	}
	l.queued, l.received = 0, 0
}

// Add makes the loop read s too.
func (l *Loop) Add(s *Socket) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return net.ErrClosed
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
		return err
	}
	l.sockets[int32(s.fd)] = s
	return nil
}

// Remove stops reading s and closes it; when Remove returns the loop no longer uses s.
func (l *Loop) Remove(s *Socket) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sockets[int32(s.fd)] == s {
		delete(l.sockets, int32(s.fd))
	}
	// Closing the socket takes it out of the epoll set (nothing dups it), so no
	// EPOLL_CTL_DEL: one syscall less per allocation. An event the loop already holds for
	// this descriptor finds no socket under it in l.sockets.
	s.Close()
}

// Close stops the loop; the listener socket stays open (its owner closes it after).
func (l *Loop) Close() {
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
