package turnserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v5/reuseport"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// connectTimeout bounds an RFC 6062 Connect; the RFC asks for at least 30 seconds.
const connectTimeout = 30 * time.Second

// maxPortTries bounds the ports one allocation probes; a full range fails fast with 508.
const maxPortTries = 256

// famRelay is where relays of one address family are bound and what they are advertised as.
type famRelay struct{ bind, adv netip.Addr }

// relayGen is the turn.RelayAddressGenerator of one listen address: relay sockets only in
// relay_ports, counted against the quotas, wrapped for byte counting and the peer filter.
type relayGen struct {
	c          *core
	v4, v6     *famRelay // nil when the family cannot be relayed
	minP, maxP uint16
	owner      *gatedPacketConn // the UDP listener socket this generator serves; nil for streams
}

var _ turn.RelayAddressGenerator = (*relayGen)(nil)

// Validate implements turn.RelayAddressGenerator.
func (g *relayGen) Validate() error {
	if g.minP == 0 || g.maxP < g.minP {
		return fmt.Errorf("%w: turn.relay_ports %d-%d", ErrConfig, g.minP, g.maxP)
	}
	return nil
}

func (g *relayGen) family(network string) (*famRelay, error) {
	fr := g.v4
	if network == "udp6" || network == "tcp6" {
		fr = g.v6
	}
	if fr == nil {
		return nil, fmt.Errorf("%w: %s", ErrFamilyUnsupported, network)
	}
	return fr, nil
}

// ports yields candidate relay ports: only the requested one, or the range from a random
// start so small ranges are covered completely.
func (g *relayGen) ports(requested int) []uint16 {
	if requested != 0 {
		if requested < int(g.minP) || requested > int(g.maxP) {
			return nil
		}
		return []uint16{uint16(requested)}
	}
	size := int(g.maxP) - int(g.minP) + 1
	n := min(size, maxPortTries)
	start := rand.IntN(size)
	out := make([]uint16, n)
	for i := range out {
		out[i] = g.minP + uint16((start+i)%size)
	}
	return out
}

// AllocatePacketConn implements turn.RelayAddressGenerator. An error makes pion answer
// 508 Insufficient Capacity, which is what the total quota asks for.
func (g *relayGen) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	fr, err := g.family(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	if err := g.c.reserve(conf.UserID); err != nil {
		return nil, nil, err
	}
	var loop *relayLoop
	if g.owner != nil {
		loop = g.owner.loop
	}
	for _, p := range g.ports(conf.RequestedPort) {
		bind := netip.AddrPortFrom(fr.bind, p)
		rec := &relayRec{network: "udp", adv: netip.AddrPortFrom(fr.adv, p), bind: bind, user: conf.UserID, owner: g.owner}
		var conn net.PacketConn
		if loop != nil {
			fd, err := listenLoopRelay(conf.Network, bind)
			if err != nil {
				continue
			}
			lr, err := newLoopRelay(loop, fd, bind, rec)
			if err != nil {
				break
			}
			rec.conn, conn = lr, lr
		} else {
			pc, err := net.ListenUDP(conf.Network, net.UDPAddrFromAddrPort(bind))
			if err != nil {
				continue
			}
			conn = &relayPacketConn{UDPConn: pc, c: g.c, rec: rec}
		}
		g.c.relays.add(rec)
		return conn, net.UDPAddrFromAddrPort(rec.adv), nil
	}
	g.c.quotas.release(conf.UserID)
	return nil, nil, fmt.Errorf("%w: %s %d-%d", ErrNoRelayPort, conf.Network, g.minP, g.maxP)
}

// AllocateListener implements turn.RelayAddressGenerator for RFC 6062 TCP allocations.
func (g *relayGen) AllocateListener(conf turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	fr, err := g.family(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	if err := g.c.reserve(conf.UserID); err != nil {
		return nil, nil, err
	}
	// SO_REUSEPORT lets Connect dial out from the relay port; it would also let two relay
	// listeners share a port, so ports this server already uses are skipped explicitly.
	lc := net.ListenConfig{Control: reuseport.Control}
	for _, p := range g.ports(conf.RequestedPort) {
		bind := netip.AddrPortFrom(fr.bind, p)
		if g.c.relays.tcpBound(bind) {
			continue
		}
		ln, err := lc.Listen(context.Background(), conf.Network, bind.String())
		if err != nil {
			continue
		}
		rec := &relayRec{network: "tcp", adv: netip.AddrPortFrom(fr.adv, p), bind: bind, user: conf.UserID}
		g.c.relays.add(rec)
		return &relayListener{Listener: ln, c: g.c, rec: rec}, net.TCPAddrFromAddrPort(rec.adv), nil
	}
	g.c.quotas.release(conf.UserID)
	return nil, nil, fmt.Errorf("%w: %s %d-%d", ErrNoRelayPort, conf.Network, g.minP, g.maxP)
}

// AllocateConn implements turn.RelayAddressGenerator: the outgoing peer connection of an
// RFC 6062 Connect, from the relay's bound (not advertised) address.
func (g *relayGen) AllocateConn(conf turn.AllocateConnConfig) (net.Conn, error) {
	rec := g.c.relays.lookupAdv("tcp", conf.LocalAddr)
	if rec == nil {
		return nil, errors.New("connect: relay is gone")
	}
	peer := addrPortOf(conf.RemoteAddr)
	if ok, name := g.c.sendAllowed("tcp", peer); !ok {
		g.c.m.peerRefused.WithLabelValues(name).Inc()
		return nil, fmt.Errorf("connect: peer %s refused", peer)
	}
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(rec.bind), Control: reuseport.Control, Timeout: connectTimeout}
	conn, err := d.Dial(conf.Network, peer.String())
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, c: g.c, rec: rec}, nil
}

// relayPacketConn is a UDP relay socket in Go's poller, for clients on stream transports:
// it counts traffic, enforces the peer filter per packet (the own-relay exception holds for
// exact relay addresses only) and returns its quota when pion closes it. Relays of UDP
// clients are loopRelays (loop.go).
type relayPacketConn struct {
	*net.UDPConn
	c     *core
	rec   *relayRec
	cache atomic.Pointer[sendDecision]
}

// sendDecision caches the filter verdict for the last peer; most allocations talk to one.
// Each packet it drops is counted as a refusal of its range.
type sendDecision struct {
	peer    netip.AddrPort
	set     *settings
	gen     uint64
	ok      bool
	refused prometheus.Counter // peer_refused_total{range} when !ok
}

// sendAllowedCached is the per-packet peer check through a relay's one-entry cache, which
// holds until the peer, the settings or the set of live relays change; drops are counted.
func sendAllowedCached(c *core, cache *atomic.Pointer[sendDecision], network string, peer netip.AddrPort) bool {
	set, gen := c.settings.Load(), c.relays.gen.Load()
	d := cache.Load()
	if d == nil || d.peer != peer || d.set != set || d.gen != gen {
		d = newSendDecision(c, network, peer, set, gen)
		cache.Store(d)
	}
	if !d.ok {
		d.refused.Inc()
	}
	return d.ok
}

func newSendDecision(c *core, network string, peer netip.AddrPort, set *settings, gen uint64) *sendDecision {
	d := &sendDecision{peer: peer, set: set, gen: gen}
	var name string
	if d.ok, name = c.sendAllowed(network, peer); !d.ok {
		d.refused = c.m.peerRefused.WithLabelValues(name)
	}
	return d
}

func (r *relayPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := r.UDPConn.ReadFrom(p)
	if n > 0 {
		r.rec.countToClient(r.c.m, n)
	}
	return n, addr, err
}

func (r *relayPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if !sendAllowedCached(r.c, &r.cache, "udp", addrPortOf(addr)) {
		return len(p), nil // dropped like any datagram; the client was told 403 at permission time
	}
	n, err := r.UDPConn.WriteTo(p, addr)
	if n > 0 {
		r.rec.countToPeer(r.c.m, n)
	}
	return n, err
}

// frameChannelData writes the ChannelData header for the n payload bytes at
// p[chanHeaderLen:] and pads them to 4 bytes as pion does (when p has room); it returns
// the frame length.
func frameChannelData(p []byte, num uint16, n int) int {
	binary.BigEndian.PutUint16(p[0:2], num)
	binary.BigEndian.PutUint16(p[2:4], uint16(n))
	frame := chanHeaderLen + n
	if padded := (frame + 3) &^ 3; padded <= len(p) {
		clear(p[frame:padded])
		frame = padded
	}
	return frame
}

func (r *relayPacketConn) Close() error {
	r.c.releaseRelay(r.rec)
	return r.UDPConn.Close()
}

// relayListener is a TCP relay listener; accepted peer connections are counted.
type relayListener struct {
	net.Listener
	c   *core
	rec *relayRec
}

func (l *relayListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, c: l.c, rec: l.rec}, nil
}

func (l *relayListener) Close() error {
	l.c.releaseRelay(l.rec)
	return l.Listener.Close()
}

// countingConn is a peer-side TCP relay connection: reads go to the client, writes to the peer.
type countingConn struct {
	net.Conn
	c   *core
	rec *relayRec
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.rec.countToClient(c.c.m, n)
	}
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.rec.countToPeer(c.c.m, n)
	}
	return n, err
}
