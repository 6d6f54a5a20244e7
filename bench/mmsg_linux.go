package main

import (
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The echo client's receive side bypasses Go's netpoller: one goroutine waits in its own
// epoll set on every session socket and drains each ready one with one non-blocking
// recvmmsg. A goroutine per socket (x/net ReadBatch) costs a wake-up, a context switch and
// a second recvmmsg (the one that returns EAGAIN) per packet at 300 pps per session, which
// on 2 cores made the generator, not the server, the bottleneck.

// mmsghdr is struct mmsghdr on 64-bit Linux: msghdr, msg_len, padding.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

func init() {
	if unsafe.Sizeof(mmsghdr{}) != 64 {
		panic("bench: mmsghdr layout assumes 64-bit Linux")
	}
}

// rxBatch is reusable recvmmsg state: no allocation per call.
type rxBatch struct {
	msgs []mmsghdr
	iovs []unix.Iovec
	bufs [][]byte
}

func newRxBatch(n, size int) *rxBatch {
	b := &rxBatch{msgs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), bufs: make([][]byte, n)}
	for i := range b.msgs {
		b.bufs[i] = make([]byte, size)
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(size)
		b.msgs[i].hdr.Iov = &b.iovs[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	return b
}

// recv reads up to len(b.msgs) datagrams without blocking; 0 when none are queued.
func (b *rxBatch) recv(fd int) int {
	r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[0])),
		uintptr(len(b.msgs)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0
	}
	return int(r)
}

func (b *rxBatch) packet(i int) []byte { return b.bufs[i][:b.msgs[i].n] }

// rawFD returns the descriptor behind conn; conn keeps owning it.
func rawFD(conn *net.UDPConn) (int, error) {
	sc, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	fd := -1
	if err := sc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return 0, err
	}
	return fd, nil
}

// poller is an epoll set whose event data is the caller's index. The epoll descriptor is
// itself non-blocking and handed to Go's netpoller (os.NewFile), so waiting parks the
// goroutine instead of blocking a thread in epoll_wait, which made the runtime hand its P to
// another thread on every wait.
type poller struct {
	epfd   int
	file   *os.File
	raw    syscall.RawConn
	events []unix.EpollEvent
}

func newPoller() (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	p := &poller{epfd: fd, file: os.NewFile(uintptr(fd), "epoll"), events: make([]unix.EpollEvent, 256)}
	if p.raw, err = p.file.SyscallConn(); err != nil {
		p.file.Close()
		return nil, err
	}
	return p, nil
}

func (p *poller) add(fd, index int) error {
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(index)})
}

// wait returns the indexes of ready sockets, waiting at most d (then possibly none).
func (p *poller) wait(d time.Duration, out []int) []int {
	out = out[:0]
	_ = p.file.SetReadDeadline(time.Now().Add(d))
	_ = p.raw.Read(func(uintptr) bool {
		n, err := unix.EpollWait(p.epfd, p.events, 0)
		if err != nil || n <= 0 {
			return false // nothing ready: park until the epoll fd is readable
		}
		for _, ev := range p.events[:n] {
			out = append(out, int(ev.Fd))
		}
		return true
	})
	return out
}

func (p *poller) close() { p.file.Close() }
