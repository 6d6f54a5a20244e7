package turnserver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
)

// portRetries is how often a port-0 listen address retries when TCP cannot follow UDP onto
// the port the kernel picked.
const portRetries = 8

// listenSet is what one turn.listen address binds: several UDP sockets sharing the port
// through SO_REUSEPORT (the kernel spreads clients across them) and a TCP listener on the
// same port.
type listenSet struct {
	ip  netip.Addr
	udp []net.PacketConn
	tcp net.Listener
}

func (l *listenSet) close() {
	for _, pc := range l.udp {
		_ = pc.Close()
	}
	if l.tcp != nil {
		_ = l.tcp.Close()
	}
}

func famSuffix(ip netip.Addr) string {
	if ip.Is4() {
		return "4"
	}
	return "6"
}

// bindListen binds nUDP UDP sockets (one where SO_REUSEPORT cannot balance them) and one TCP listener on ap. The first UDP socket binds
// without SO_REUSEPORT, so it fails on a port someone else holds (and port 0 picks a truly
// free port); it then enables SO_REUSEPORT so its siblings can join it.
func bindListen(ap netip.AddrPort, nUDP int) (*listenSet, error) {
	if !reusePortSupported {
		nUDP = 1 // several sockets on one port need Linux's SO_REUSEPORT balancing and steering
	}
	tries := 1
	if ap.Port() == 0 {
		tries = portRetries
	}
	var lastErr error
	for range tries {
		ls, err := bindOnce(ap, nUDP)
		if err == nil {
			return ls, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func bindOnce(ap netip.AddrPort, nUDP int) (*listenSet, error) {
	ctx := context.Background()
	fam := famSuffix(ap.Addr())
	ls := &listenSet{ip: ap.Addr()}
	first, err := (&net.ListenConfig{}).ListenPacket(ctx, "udp"+fam, ap.String())
	if err != nil {
		return nil, fmt.Errorf("%w: udp %s: %v", ErrListen, ap, err)
	}
	ls.udp = append(ls.udp, first)
	if nUDP > 1 {
		sc, err := first.(*net.UDPConn).SyscallConn()
		if err == nil {
			err = setReusePort(sc)
		}
		if err != nil {
			ls.close()
			return nil, fmt.Errorf("%w: SO_REUSEPORT on udp %s: %v", ErrListen, ap, err)
		}
	}
	port := first.LocalAddr().(*net.UDPAddr).Port
	bound := netip.AddrPortFrom(ap.Addr(), uint16(port)).String()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error { return setReusePort(c) }}
	for i := 1; i < nUDP; i++ {
		pc, err := lc.ListenPacket(ctx, "udp"+fam, bound)
		if err != nil {
			ls.close()
			return nil, fmt.Errorf("%w: udp %s socket %d: %v", ErrListen, bound, i+1, err)
		}
		ls.udp = append(ls.udp, pc)
	}
	if err := steerBySourceIP(ap.Addr(), ls.udp); err != nil {
		ls.close()
		return nil, fmt.Errorf("%w: udp %s: %v", ErrListen, bound, err)
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp"+fam, bound)
	if err != nil {
		ls.close()
		return nil, fmt.Errorf("%w: tcp %s: %v", ErrListen, bound, err)
	}
	ls.tcp = ln
	return ls, nil
}

// relayFamily decides where relays of one family (4 or 6) bind and what they advertise for
// a listen IP: relay_ip, else the listen IP, else the family's loopback when listening on
// loopback, else unspecified; advertised is public_ip, else the bound IP, else the address
// the host would use for outbound traffic. nil means this host cannot relay the family.
func relayFamily(fam int, listen, relayIP, publicIP netip.Addr) *familyRelay {
	is := func(a netip.Addr) bool { return a.IsValid() && (fam == 4) == a.Is4() }
	var bind netip.Addr
	switch {
	case is(relayIP):
		bind = relayIP
	case is(listen):
		bind = listen
	case listen.IsLoopback() && fam == 4:
		bind = netip.MustParseAddr("127.0.0.1")
	case listen.IsLoopback():
		bind = netip.IPv6Loopback()
	case fam == 4:
		bind = netip.IPv4Unspecified()
	default:
		bind = netip.IPv6Unspecified()
	}
	// Probe: a host without the family (or without that address) cannot relay it.
	probe, err := net.ListenUDP("udp"+strconv.Itoa(fam), net.UDPAddrFromAddrPort(netip.AddrPortFrom(bind, 0)))
	if err != nil {
		return nil
	}
	_ = probe.Close()
	adv := bind
	switch {
	case is(publicIP):
		adv = publicIP
	case bind.IsUnspecified():
		if adv = outboundIP(fam); !adv.IsValid() {
			return nil
		}
	}
	return &familyRelay{bind: bind, advertised: adv}
}

// outboundIP is the source address the host picks toward a documentation address (a UDP
// "connect" sends nothing), else the first non-loopback interface address, else loopback.
func outboundIP(fam int) netip.Addr {
	target := "192.0.2.1:9"
	if fam == 6 {
		target = "[2001:db8::1]:9"
	}
	if c, err := net.Dial("udp"+strconv.Itoa(fam), target); err == nil { //nolint:noctx // no traffic, no blocking
		ap := addrPortOf(c.LocalAddr())
		_ = c.Close()
		if ap.Addr().IsValid() && !ap.Addr().IsUnspecified() {
			return ap.Addr()
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Addr{}
	}
	var loop netip.Addr
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := pfx.Addr().Unmap()
		if (fam == 4) != ip.Is4() || ip.IsLinkLocalUnicast() {
			continue
		}
		if ip.IsLoopback() {
			loop = ip
			continue
		}
		return ip
	}
	return loop
}
