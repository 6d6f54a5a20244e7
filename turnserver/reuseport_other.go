//go:build !linux

package turnserver

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

// reusePortSupported is false: elsewhere SO_REUSEPORT does not spread UDP datagrams over a
// group (or does not exist), so each listen address gets one UDP socket.
const reusePortSupported = false

func setReusePort(syscall.RawConn) error { return errors.New("SO_REUSEPORT balancing needs Linux") }

func steerBySourceIP(netip.Addr, []net.PacketConn) error { return nil }
