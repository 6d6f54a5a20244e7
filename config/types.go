package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in TOML as a Go duration string ("12h", "30s").
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration like \"12h\" or \"30s\": %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration back as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// PortRange is an inclusive UDP/TCP port range written "min-max".
type PortRange struct{ Min, Max uint16 }

// UnmarshalText parses "min-max" (or a single port).
func (r *PortRange) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	lo, hi, found := strings.Cut(s, "-")
	if !found {
		hi = lo
	}
	min, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	max, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil || min == 0 {
		return fmt.Errorf("not a port range like \"49152-65535\": %q", s)
	}
	if min > max {
		return fmt.Errorf("inverted port range %q: %d is above %d", s, min, max)
	}
	r.Min, r.Max = uint16(min), uint16(max)
	return nil
}

// MarshalText writes the range as "min-max".
func (r PortRange) MarshalText() ([]byte, error) {
	return []byte(fmt.Sprintf("%d-%d", r.Min, r.Max)), nil
}

// Size is the number of ports in the range.
func (r PortRange) Size() int { return int(r.Max) - int(r.Min) + 1 }

// Prefix is a CIDR (or a bare address, taken as a single-host prefix).
type Prefix struct{ netip.Prefix }

// UnmarshalText parses "10.0.0.0/8", "fd00::/8" or a bare address.
func (p *Prefix) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("not a CIDR like \"10.0.0.0/8\": %q", s)
		}
		p.Prefix = netip.PrefixFrom(a, a.BitLen())
		return nil
	}
	v, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("not a CIDR like \"10.0.0.0/8\": %q", s)
	}
	p.Prefix = v.Masked()
	return nil
}

// MarshalText writes the prefix in CIDR form.
func (p Prefix) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// Addrs is one or several listen addresses; TOML may give a string or a list of strings.
type Addrs []string

// UnmarshalTOML accepts "host:port" or ["host:port", ...].
func (a *Addrs) UnmarshalTOML(v any) error {
	switch t := v.(type) {
	case string:
		*a = Addrs{t}
		return nil
	case []any:
		out := make(Addrs, 0, len(t))
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return errors.New("must be a \"host:port\" string or a list of them")
			}
			out = append(out, s)
		}
		*a = out
		return nil
	default:
		return errors.New("must be a \"host:port\" string or a list of them")
	}
}

// ParseHostPort parses a listen address "host:port" as validation accepted it; an empty
// host means every IPv4 address.
func ParseHostPort(s string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("not a host:port: %q", s)
	}
	ip := netip.IPv4Unspecified()
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, fmt.Errorf("host must be an IP address: %q", s)
		}
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
}

// AddrPorts parses every address (see ParseHostPort).
func (a Addrs) AddrPorts() ([]netip.AddrPort, error) {
	out := make([]netip.AddrPort, 0, len(a))
	for _, s := range a {
		ap, err := ParseHostPort(s)
		if err != nil {
			return nil, err
		}
		out = append(out, ap)
	}
	return out, nil
}

// Prefixes returns the netip prefixes of ps.
func Prefixes(ps []Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = p.Prefix
	}
	return out
}

// Bitrate is a rate in bits per second. TOML gives it as a number of bits per second or a
// string with an SI suffix: "400k", "2M", "1.5G" (k = 1000). Empty or 0: no cap.
type Bitrate uint64

// Bounds validation puts on a cap that is set: below MinBitrate not even a voice call fits
// (and a TCP relay's pacing would stall for seconds per read); MaxBitrate is beyond any NIC.
const (
	MinBitrate Bitrate = 16_000
	MaxBitrate Bitrate = 10_000_000_000_000
)

// UnmarshalTOML accepts an integer or a string (see Bitrate).
func (b *Bitrate) UnmarshalTOML(v any) error {
	switch t := v.(type) {
	case int64:
		if t < 0 {
			return fmt.Errorf("a bitrate must not be negative, got %d", t)
		}
		*b = Bitrate(t)
		return nil
	case string:
		r, err := ParseBitrate(t)
		if err != nil {
			return err
		}
		*b = r
		return nil
	default:
		return errors.New(`must be a number of bits per second or a string like "400k" or "2M"`)
	}
}

// ParseBitrate parses "", "0", "64000", "400k", "2M", "1.5G".
func ParseBitrate(s string) (Bitrate, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	mult := 1.0
	switch s[len(s)-1] {
	case 'k', 'K':
		mult = 1e3
	case 'M':
		mult = 1e6
	case 'G':
		mult = 1e9
	}
	num := s
	if mult != 1 {
		num = s[:len(s)-1]
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || f*mult > float64(1<<62) || num == "" || strings.ContainsAny(num, "eEnNxX_+-") {
		return 0, fmt.Errorf("not a bitrate like \"400k\", \"2M\" or 64000 (bits per second; k, M, G are 1000, 10⁶, 10⁹): %q", s)
	}
	return Bitrate(math.Round(f * mult)), nil
}

// String writes the rate with the largest suffix that keeps it exact: 400000 is "400k".
func (b Bitrate) String() string {
	switch {
	case b == 0:
		return ""
	case b%1_000_000_000 == 0:
		return strconv.FormatUint(uint64(b/1_000_000_000), 10) + "G"
	case b%1_000_000 == 0:
		return strconv.FormatUint(uint64(b/1_000_000), 10) + "M"
	case b%1_000 == 0:
		return strconv.FormatUint(uint64(b/1_000), 10) + "k"
	}
	return strconv.FormatUint(uint64(b), 10)
}

// MarshalText writes the rate as String does ("" for no cap).
func (b Bitrate) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// ParseAlternate parses an ALTERNATE-SERVER entry: an IP address and a port (the attribute
// carries an address, not a name).
func ParseAlternate(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(strings.TrimSpace(s))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not ip:port (an IP address, not a name, and a port; [v6]:port for IPv6)", s)
	}
	if ap.Port() == 0 || ap.Addr().IsUnspecified() || ap.Addr().Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%q: needs a port and a specific address without a zone", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// AlternateAddrs parses entries validation accepted.
func AlternateAddrs(ss []string) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(ss))
	for _, s := range ss {
		if ap, err := ParseAlternate(s); err == nil {
			out = append(out, ap)
		}
	}
	return out
}
