//go:build linux

package udploop

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batch is a set of datagram slots for recvmmsg/sendmmsg: one buffer, one address and one
// header each. Headers point into the batch's own arrays, so a batch must not be copied.
type batch struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for IPv4 too
	bufs  [][]byte
}

// mmsghdr is struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; }, which C pads
// to the alignment of a pointer: 4 bytes of padding on 64-bit, none on 32-bit. msgLen[0] is
// msg_len; the array is the padding (a trailing zero-size field would make Go pad instead).
type mmsghdr struct {
	hdr    unix.Msghdr
	msgLen [unsafe.Sizeof(uintptr(0)) / 4]uint32
}

// The layout check: the array length is 0 only when mmsghdr has the size the kernel expects
// (msghdr plus msg_len, rounded up to pointer alignment); any other size fails to compile.
var _ [0]struct{} = [unsafe.Sizeof(mmsghdr{}) - (unsafe.Sizeof(unix.Msghdr{})+4+unsafe.Sizeof(uintptr(0))-1)/unsafe.Sizeof(uintptr(0))*unsafe.Sizeof(uintptr(0))]struct{}{}

func newBatch(n, bufSize int) *batch {
	b := &batch{
		hdrs:  make([]mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		bufs:  make([][]byte, n),
	}
	for i := range b.hdrs {
		if bufSize > 0 {
			b.bufs[i] = make([]byte, bufSize)
		}
		b.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.hdrs[i].hdr.Iov = &b.iovs[i]
		b.hdrs[i].hdr.SetIovlen(1)
	}
	return b
}

// armRecv points slot i's iovec at buf and resets its address length for a receive.
func (b *batch) armRecv(i int, buf []byte) {
	b.iovs[i].Base = &buf[0]
	b.iovs[i].SetLen(len(buf))
	b.hdrs[i].hdr.Namelen = unix.SizeofSockaddrInet6
	b.hdrs[i].hdr.Flags = 0
}

// setSend points slot i at p, addressed to dst in the family of the sending socket.
func (b *batch) setSend(i int, p []byte, dst netip.AddrPort, v6sock bool) {
	b.iovs[i].Base = &p[0]
	b.iovs[i].SetLen(len(p))
	b.hdrs[i].hdr.Namelen = putSockaddr(&b.names[i], dst, v6sock)
}

// recvmmsg reads up to n datagrams into slots from, from+1, … without blocking.
func (b *batch) recvmmsg(fd uintptr, from, n int) (int, unix.Errno) {
	for {
		// Raw: with MSG_DONTWAIT the call cannot block, so the scheduler need not know.
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[from])), uintptr(n),
			unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			return int(r), 0
		case unix.EINTR:
			continue
		default:
			return 0, e
		}
	}
}

// sendAll sends slots [0, n) with sendmmsg; a slot the kernel refuses is skipped, and a full
// socket buffer drops the rest (UDP semantics). It returns how many were sent.
func (b *batch) sendAll(fd uintptr, n int) int {
	sent := 0
	for off := 0; off < n; {
		// Raw: non-blocking, and an entersyscall per batch would keep sysmon polling at its
		// fastest rate for nothing.
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[off])), uintptr(n-off),
			unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return sent
		case e != 0:
			off++ // this datagram cannot be sent; go on with the others
		default:
			sent += int(r)
			off += int(r)
		}
	}
	return sent
}

// putSockaddr writes ap into raw in the family of the socket (v6 sockets take IPv4
// destinations 4-in-6) and returns its length.
func putSockaddr(raw *unix.RawSockaddrInet6, ap netip.AddrPort, v6sock bool) uint32 {
	if !v6sock {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(raw))
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		sa.Addr = ap.Addr().Unmap().As4()
		sa.Zero = [8]byte{}
		return unix.SizeofSockaddrInet4
	}
	raw.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&raw.Port))[:], ap.Port())
	raw.Flowinfo = 0
	raw.Addr = ap.Addr().As16()
	raw.Scope_id = 0
	return unix.SizeofSockaddrInet6
}

// sockaddrAddrPort reads the source address recvmmsg stored, as the socket reports it (a v6
// socket reports IPv4 sources 4-in-6, as net.UDPConn does).
func sockaddrAddrPort(raw *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&raw.Port))[:])
	if raw.Family == unix.AF_INET {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(raw))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(raw.Addr), port)
}
