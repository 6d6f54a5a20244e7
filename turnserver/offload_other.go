//go:build !linux

package turnserver

import "net"

// offloader stands for the XDP offload, which exists on Linux only (offload_linux.go);
// here it is always nil and every method does nothing.
type offloader struct{}

func openOffload(s *Server, cfg Config) *offloader {
	if cfg.Offload == OffloadXDP {
		s.log.Warn("turn xdp offload off; relaying in user space", "err", "XDP exists on Linux only")
	}
	return nil
}

func (*offloader) channel(_, _, _, _ net.Addr, _ uint16, _ bool) {}
func (*offloader) permission(_, _, _ net.Addr, _ net.IP, _ bool) {}
func (*offloader) reconcile()                                    {}
func (*offloader) allocationDeleted(*relayRecord)                {}
func (*offloader) close() error                                  { return nil }
