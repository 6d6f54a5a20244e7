//go:build linux

package turnserver

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePortSupported: Linux balances datagrams over an SO_REUSEPORT group, and
// steerBySourceIP keeps each client on one socket.
const reusePortSupported = true

// setReusePort enables SO_REUSEPORT on a socket (before bind, or after, see bindListen).
func setReusePort(c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// skfNetOff is SKF_NET_OFF: negative cBPF load offsets relative to the network header.
const skfNetOff = 0xFFF00000 // uint32(-0x100000)

// steerBySourceIP attaches a classic BPF program to the SO_REUSEPORT group of socks that
// picks the socket by client IP (modulo the group size) instead of the kernel's 4-tuple
// hash. pion keeps allocations, reservations (EVEN-PORT / RESERVATION-TOKEN) and nonces
// per socket, so all sockets of one client host must land on the same one; clients from
// different hosts still spread over all sockets (and cores).
func steerBySourceIP(ip netip.Addr, socks []net.PacketConn) error {
	if len(socks) < 2 {
		return nil
	}
	// IPv4 source address is at network header offset 12; for IPv6 use the low 32 bits of
	// the source (offset 8+12), which vary most between hosts.
	off := uint32(12)
	if ip.Is6() {
		off = 20
	}
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfNetOff + off},
		{Code: unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K, K: uint32(len(socks))},
		{Code: unix.BPF_RET | unix.BPF_A},
	}
	sc, err := socks[len(socks)-1].(*net.UDPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := sc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_ATTACH_REUSEPORT_CBPF: %w", serr)
	}
	return nil
}
