package turnserver

import (
	"net"
	"net/netip"
	"os"
	"sync"
)

// udpListener is a UDP listen socket as pion reads it: client datagrams that passed
// admission. Relays of its clients are opened through it, and it hears of their allocations
// and channels, so a listener served by the UDP loop can relay for them without pion.
type udpListener interface {
	net.PacketConn
	// openRelay binds the relay socket of rec; retry means the port was taken.
	openRelay(network string, rec *relayRecord) (conn net.PacketConn, retry bool, err error)
	allocationCreated(client net.Addr, rec *relayRecord)
	allocationDeleted(rec *relayRecord)
	channelChanged(rec *relayRecord, peer netip.AddrPort, num uint16, bound bool)
}

// PortableUDPEnv names the environment variable that, set to 1, keeps the UDP loop off
// where it exists: the test suite runs the TURN tests through both paths with it.
const PortableUDPEnv = "ICEHUB_PORTABLE_UDP"

func forcePortableUDP() bool { return os.Getenv(PortableUDPEnv) == "1" }

// newUDPListener wraps a bound UDP listen socket: served by the UDP loop where it exists
// (unless portable), else read by pion through plainListener.
func newUDPListener(pc net.PacketConn, adm *admission, portable bool) udpListener {
	if udp, ok := pc.(*net.UDPConn); ok {
		// Bursts queue in the kernel instead of being dropped while a core is busy elsewhere.
		_ = udp.SetReadBuffer(4 << 20)
		_ = udp.SetWriteBuffer(4 << 20)
		if !portable && udploopSupported {
			l, err := newLoopListener(udp, adm)
			if err == nil {
				return l
			}
			adm.s.log.Warn("turn UDP loop off for this socket; pion reads it", "listen", pc.LocalAddr().String(), "err", err.Error())
		}
	}
	return &plainListener{PacketConn: pc, adm: adm}
}

// plainListener is the portable UDP listener: pion reads the socket, admission filters.
type plainListener struct {
	net.PacketConn
	adm *admission
	// recs maps a client's address to its allocation's relay, for the bitrate caps on
	// what pion writes to it.
	recs sync.Map // netip.AddrPort → *relayRecord
}

func (p *plainListener) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := p.PacketConn.ReadFrom(b)
		if err != nil {
			return n, addr, err
		}
		if out, ok := p.adm.admit(b[:n], addr, p); ok && len(out) < len(b) {
			return copy(b, out), addr, nil
		}
	}
}

// WriteTo is pion's: its unauthenticated answers pass admission's outgoing rewrite, and the
// data it relays to a client the bitrate caps.
func (p *plainListener) WriteTo(b []byte, to net.Addr) (int, error) {
	if !p.adm.s.frameWithinCaps(p.recOf(to), b) {
		return len(b), nil // over a cap: dropped, counted
	}
	if _, err := p.PacketConn.WriteTo(p.adm.outgoing(b, to), to); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (p *plainListener) scratch() []byte             { return make([]byte, 0, answerMax) }
func (p *plainListener) reply(b []byte, to net.Addr) { _, _ = p.PacketConn.WriteTo(b, to) }

func (p *plainListener) openRelay(network string, rec *relayRecord) (net.PacketConn, bool, error) {
	return openRelay(p.adm.s, network, rec)
}

func (p *plainListener) recOf(to net.Addr) *relayRecord {
	if !p.adm.s.policy.Load().capsBitrate() {
		return nil
	}
	if r, ok := p.recs.Load(addrPortOf(to)); ok {
		return r.(*relayRecord)
	}
	return nil
}

func (p *plainListener) allocationCreated(client net.Addr, rec *relayRecord) {
	p.recs.Store(addrPortOf(client), rec)
}

func (p *plainListener) allocationDeleted(rec *relayRecord) {
	if rec.client != nil {
		p.recs.CompareAndDelete(addrPortOf(rec.client), rec)
	}
}

func (p *plainListener) channelChanged(*relayRecord, netip.AddrPort, uint16, bool) {}
