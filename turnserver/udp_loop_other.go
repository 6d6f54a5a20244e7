//go:build !linux

package turnserver

import (
	"errors"
	"net"
)

const udploopSupported = false

func newLoopListener(*net.UDPConn, *admission) (udpListener, error) {
	return nil, errors.New("the UDP loop needs Linux")
}
