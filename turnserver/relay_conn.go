package turnserver

import (
	"net"
	"net/netip"
	"sync/atomic"
)

// relayPacketConn is a UDP relay socket in Go's poller: the portable relay, and the one for
// clients on stream transports. It counts traffic, filters peers per packet (the own-relay
// exception holds for exact relay addresses only) and returns its quota when pion closes
// it. Relays of UDP clients on Linux are loopRelays (udp_loop_linux.go).
type relayPacketConn struct {
	*net.UDPConn
	s     *Server
	rec   *relayRecord
	cache atomic.Pointer[sendDecision]
}

// openRelay binds a portable relay socket for rec; retry means the port was taken.
func openRelay(s *Server, network string, rec *relayRecord) (net.PacketConn, bool, error) {
	pc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(rec.bind))
	if err != nil {
		return nil, true, err
	}
	return &relayPacketConn{UDPConn: pc, s: s, rec: rec}, false, nil
}

func (r *relayPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := r.UDPConn.ReadFrom(p)
	if n > 0 {
		r.rec.countToClient(r.s.m, n)
	}
	return n, addr, err
}

func (r *relayPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if !r.s.sendAllowedCached(&r.cache, "udp", addrPortOf(addr)) {
		return len(p), nil // dropped like any datagram; the client was told 403 at permission time
	}
	n, err := r.UDPConn.WriteTo(p, addr)
	if n > 0 {
		r.rec.countToPeer(r.s.m, n)
	}
	return n, err
}

func (r *relayPacketConn) Close() error {
	r.s.releaseRelay(r.rec)
	return r.UDPConn.Close()
}

// relayListener is an RFC 6062 TCP relay listener; accepted peer connections are counted.
type relayListener struct {
	net.Listener
	s   *Server
	rec *relayRecord
}

func (l *relayListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, s: l.s, rec: l.rec}, nil
}

func (l *relayListener) Close() error {
	l.s.releaseRelay(l.rec)
	return l.Listener.Close()
}

// countingConn is a peer-side TCP relay connection: reads go to the client, writes to the peer.
type countingConn struct {
	net.Conn
	s   *Server
	rec *relayRecord
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.rec.countToClient(c.s.m, n)
	}
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.rec.countToPeer(c.s.m, n)
	}
	return n, err
}

// addrPortOf converts a UDP or TCP net.Addr to an unmapped netip.AddrPort.
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.UDPAddr:
		ap = v.AddrPort()
	case *net.TCPAddr:
		ap = v.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
