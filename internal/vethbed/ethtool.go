//go:build linux

package vethbed

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The legacy ethtool ioctl is enough for one on/off feature and spares the bed a
// dependency on the ethtool binary, which minimal systems lack.
const ethtoolSTXCSUM = 0x17 // set TX checksum offload

type ethtoolValue struct{ cmd, data uint32 }

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte // the rest of struct ifreq's union
}

func ethtoolSet(dev string, cmd uint32, on bool) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: cmd}
	if on {
		v.data = 1
	}
	var ifr ifreqData
	copy(ifr.name[:], dev)
	ifr.data = unsafe.Pointer(&v)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return fmt.Errorf("SIOCETHTOOL %#x on %s: %w", cmd, dev, errno)
	}
	return nil
}

func setTxChecksum(dev string, on bool) error { return ethtoolSet(dev, ethtoolSTXCSUM, on) }
