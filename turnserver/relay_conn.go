package turnserver

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// relayPacketConn is a UDP relay socket in Go's poller: the portable relay, and the one for
// clients on stream transports. It counts traffic, filters peers per packet (the own-relay
// exception holds for exact relay addresses only) and returns its quota when pion closes
// it. Relays of UDP clients on Linux are loopRelays (udp_loop_linux.go).
type relayPacketConn struct {
	*net.UDPConn
	s       *Server
	rec     *relayRecord
	cache   atomic.Pointer[sendDecision] // the last peer sent to
	inCache atomic.Pointer[sendDecision] // the last peer received from
	// fromOwn holds datagrams handed over by this server's other relays (own_relay.go).
	fromOwn chan pionPacket
}

// pionPacket is a datagram handed to pion's read loop: a copy, and its source.
type pionPacket struct {
	b   []byte
	src netip.AddrPort
}

// ownRelayQueue bounds the datagrams waiting from own relays; beyond it they are dropped,
// as a full socket buffer would drop them.
const ownRelayQueue = 32

// openRelay binds a portable relay socket for rec; retry means the port was taken.
func openRelay(s *Server, network string, rec *relayRecord) (net.PacketConn, bool, error) {
	pc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(rec.bind))
	if err != nil {
		return nil, true, err
	}
	return &relayPacketConn{UDPConn: pc, s: s, rec: rec, fromOwn: make(chan pionPacket, ownRelayQueue)}, false, nil
}

func (r *relayPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		select {
		case pkt := <-r.fromOwn:
			r.rec.countToClient(r.s.m, len(pkt.b))
			return copy(p, pkt.b), net.UDPAddrFromAddrPort(pkt.src), nil
		default:
		}
		n, addr, err := r.UDPConn.ReadFrom(p)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Woken by receiveFromOwnRelay (pion sets no deadline on relay sockets): take
			// what was handed over. The deadline may have been set after a datagram was
			// already taken above, so nothing may be waiting: then read on.
			_ = r.UDPConn.SetReadDeadline(time.Time{})
			continue
		}
		if err == nil && !r.s.sendDecision(&r.inCache, addrPortOf(addr)).ok {
			continue // a peer the filter refuses reaches nobody either way
		}
		if n > 0 {
			r.rec.countToClient(r.s.m, n)
		}
		return n, addr, err
	}
}

func (r *relayPacketConn) receiveFromOwnRelay(payload []byte, from netip.AddrPort) {
	select {
	case r.fromOwn <- pionPacket{b: append([]byte(nil), payload...), src: from}:
		_ = r.UDPConn.SetReadDeadline(wakeReader)
	default:
	}
}

func (r *relayPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	d := r.s.sendDecision(&r.cache, addrPortOf(addr))
	if !d.ok {
		return len(p), nil // dropped like any datagram; the client was told 403 at permission time
	}
	if !r.s.withinCaps(r.rec, toPeer, len(p)) {
		return len(p), nil // over a bitrate cap: dropped, counted
	}
	if d.own != nil && d.own != r.rec && deliverToOwnRelay(d.own, p, r.rec.advertised) {
		r.rec.countToPeer(r.s.m, len(p))
		return len(p), nil
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
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ok, name := l.s.sendAllowed("tcp", addrPortOf(conn.RemoteAddr())); !ok {
			l.s.m.peerRefused.WithLabelValues(name).Inc()
			_ = conn.Close() // a peer the filter refuses reaches nobody either way
			continue
		}
		return newCountingConn(conn, l.s, l.rec), nil
	}
}

func (l *relayListener) Close() error {
	l.s.releaseRelay(l.rec)
	return l.Listener.Close()
}

// countingConn is a peer-side TCP relay connection: reads go to the client, writes to the
// peer. Under a bitrate cap it paces both ways (bitrate.go): a byte stream cannot drop.
type countingConn struct {
	net.Conn
	s         *Server
	rec       *relayRecord
	closed    chan struct{} // ends a pacing wait
	closeOnce sync.Once
}

func newCountingConn(conn net.Conn, s *Server, rec *relayRecord) *countingConn {
	return &countingConn{Conn: conn, s: s, rec: rec, closed: make(chan struct{})}
}

// pacedRead bounds one read under a cap, so one wait stays short (2 s at the lowest cap).
const pacedRead = 4 << 10

func (c *countingConn) Read(p []byte) (int, error) {
	if len(p) > pacedRead && c.s.policy.Load().capsBitrate() {
		p = p[:pacedRead]
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.rec.countToClient(c.s.m, n)
		c.pace(toClient, n)
	}
	return n, err
}

// pace waits as long as the caps ask for n more bytes in direction d, or until Close.
func (c *countingConn) pace(d direction, n int) {
	wait := c.s.paceCaps(c.rec, d, n)
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.closed:
	}
}

func (c *countingConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.pace(toPeer, len(p))
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
