//go:build linux

package udploop

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Supported is true where the loop is built in.
const Supported = true

// ErrFamily is returned for an address the socket's family cannot reach.
var ErrFamily = errors.New("udploop: address family mismatch")

// Socket is a non-blocking UDP socket outside Go's poller. Send holds mu read-locked so the
// descriptor cannot be closed (and its number reused by another socket) under a sender.
type Socket struct {
	fd     int
	v6     bool
	mu     sync.RWMutex
	closed bool
	// Tag is the owner's, for its Handler to find its own state from a Socket.
	Tag any
}

// Listen binds a non-blocking UDP socket of network ("udp4" or "udp6") on bind.
func Listen(network string, bind netip.AddrPort) (*Socket, error) {
	fam := unix.AF_INET
	if network == "udp6" {
		fam = unix.AF_INET6
	}
	if (fam == unix.AF_INET) != bind.Addr().Is4() {
		return nil, ErrFamily
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
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
		return nil, err
	}
	return &Socket{fd: fd, v6: fam == unix.AF_INET6}, nil
}

// TakeConn moves a bound UDP socket out of Go's poller: its descriptor is duplicated and the
// net.UDPConn closed, so the loop's epoll set waits for it instead, while the socket keeps
// its place in an SO_REUSEPORT group. On error c is left open and untouched.
func TakeConn(c *net.UDPConn) (*Socket, error) {
	local, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, ErrFamily
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		_ = unix.Close(dup)
		return nil, err
	}
	_ = c.Close() // the duplicate keeps the socket
	return &Socket{fd: dup, v6: local.IP.To4() == nil}, nil
}

// V6 reports whether this is an IPv6 socket (which reaches IPv4 destinations 4-in-6).
func (s *Socket) V6() bool { return s.v6 }

// Send sends one datagram to dst without blocking; a full socket buffer drops it, as UDP may.
func (s *Socket) Send(p []byte, dst netip.AddrPort) error {
	if !s.v6 && !dst.Addr().Unmap().Is4() {
		return ErrFamily
	}
	var raw unix.RawSockaddrInet6
	n := putSockaddr(&raw, dst, s.v6)
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
		return fmt.Errorf("sendto %s: %w", dst, e)
	}
}

// Close closes the descriptor once; later Sends fail with net.ErrClosed.
func (s *Socket) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		_ = unix.Close(s.fd)
	}
}

// getsockname returns the address s is bound to.
func getsockname(s *Socket) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(s.fd)
	if err != nil {
		return netip.AddrPort{}, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)), nil
	}
	return netip.AddrPort{}, ErrFamily
}
