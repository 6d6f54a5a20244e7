package config

import (
	"net/netip"
	"strings"
)

// validateOffload checks turn.offload and turn.offload_interfaces. The XDP program matches
// the destination address of each packet, so it needs a concrete listen address to serve
// (a wildcard listener's clients stay in user space) and, when relay_ip is set, a concrete one.
func (t *TURN) validateOffload(data []byte) error {
	for _, name := range t.OffloadInterfaces {
		// Linux interface names: 1-15 bytes, no '/', ':' or whitespace.
		if name == "" || len(name) > 15 || strings.ContainsAny(name, "/: \t\n") {
			return keyErr(data, "turn.offload_interfaces", "not an interface name: %q", name)
		}
	}
	switch t.Offload {
	case "off":
		return nil
	case "xdp":
	default:
		return keyErr(data, "turn.offload", `must be "off" or "xdp", not %q`, t.Offload)
	}
	concrete := false
	for _, a := range t.Listen {
		if ap, err := ParseHostPort(a); err == nil && !ap.Addr().IsUnspecified() {
			concrete = true
		}
	}
	if !concrete {
		return keyErr(data, "turn.offload", `"xdp" needs a turn.listen address with a concrete IP (the kernel program matches the address clients send to), not only wildcards like %q`, t.Listen[0])
	}
	if ip, err := netip.ParseAddr(t.RelayIP); err == nil && ip.IsUnspecified() {
		return keyErr(data, "turn.relay_ip", `turn.offload = "xdp" needs a concrete relay_ip (or none), not %q`, t.RelayIP)
	}
	return nil
}
