//go:build linux

package xdprelay

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// DefaultInterfaces returns the names of the interfaces that carry the given local
// addresses (the TURN listen and relay addresses), for turn.offload_interfaces' default.
// An unspecified address (0.0.0.0, ::) stands for every interface that is up and not
// loopback: a wildcard listener receives on all of them. An address no interface carries
// is an error, naming it.
func DefaultInterfaces(addrs []netip.Addr) ([]string, error) {
	ifis, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	carried := map[netip.Addr]string{}
	var wild []string
	for _, ifi := range ifis {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagLoopback == 0 {
			wild = append(wild, ifi.Name)
		}
		as, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range as {
			if pn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(pn.IP); ok {
					carried[ip.Unmap()] = ifi.Name
				}
			}
		}
	}
	var out []string
	for _, a := range addrs {
		a = a.Unmap()
		if a.IsUnspecified() {
			out = append(out, wild...)
			continue
		}
		name, ok := carried[a]
		if !ok {
			return nil, fmt.Errorf("no interface carries %v", a)
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
