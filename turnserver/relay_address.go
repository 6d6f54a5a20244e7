package turnserver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/pion/transport/v5/reuseport"
	"github.com/pion/turn/v5"
)

// connectTimeout bounds an RFC 6062 Connect; the RFC asks for at least 30 seconds.
const connectTimeout = 30 * time.Second

// maxPortTries bounds the ports one allocation probes; a full range fails fast with 508.
const maxPortTries = 256

// familyRelay is where relays of one address family are bound and what they are advertised as.
type familyRelay struct{ bind, advertised netip.Addr }

// relayAddresses is the turn.RelayAddressGenerator of one listen address: relay sockets only
// in the configured port range, counted against the quotas, filtering peers per packet.
type relayAddresses struct {
	s      *Server
	v4, v6 *familyRelay // nil when the family cannot be relayed
	ports  PortRange
	// owner is the UDP listener socket this generator serves (its relays are opened through
	// it, so the UDP loop can serve them); nil for stream listeners.
	owner udpListener
	// tls: its clients come through a TLS listener (for their usage records).
	tls bool
}

// tlsGen marks g as the generator of a TLS listener.
func tlsGen(g *relayAddresses) *relayAddresses {
	g.tls = true
	return g
}

var _ turn.RelayAddressGenerator = (*relayAddresses)(nil)

// Validate implements turn.RelayAddressGenerator; New has validated the port range.
func (g *relayAddresses) Validate() error { return nil }

func (g *relayAddresses) family(network string) (*familyRelay, error) {
	fr := g.v4
	if network == "udp6" || network == "tcp6" {
		fr = g.v6
	}
	if fr == nil {
		return nil, fmt.Errorf("%w: %s", ErrFamilyUnsupported, network)
	}
	return fr, nil
}

// candidatePorts yields the relay ports to try: only the requested one, or the range from a
// random start so small ranges are covered completely.
func (g *relayAddresses) candidatePorts(requested int) []uint16 {
	lo, hi := g.ports.Min, g.ports.Max
	if requested != 0 {
		if requested < int(lo) || requested > int(hi) {
			return nil
		}
		return []uint16{uint16(requested)}
	}
	size := int(hi) - int(lo) + 1
	n := min(size, maxPortTries)
	start := rand.IntN(size)
	out := make([]uint16, n)
	for i := range out {
		out[i] = lo + uint16((start+i)%size)
	}
	return out
}

// AllocatePacketConn implements turn.RelayAddressGenerator. An error makes pion answer
// 508 Insufficient Capacity, which is what the total quota asks for.
func (g *relayAddresses) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	fr, err := g.family(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	if err := g.s.reserveRelay(conf.UserID); err != nil {
		return nil, nil, err
	}
	for _, p := range g.candidatePorts(conf.RequestedPort) {
		bind := netip.AddrPortFrom(fr.bind, p)
		rec := &relayRecord{network: "udp", advertised: netip.AddrPortFrom(fr.advertised, p), bind: bind, user: conf.UserID, owner: g.owner, clientTLS: g.tls}
		var conn net.PacketConn
		var retry bool
		if g.owner != nil {
			conn, retry, err = g.owner.openRelay(conf.Network, rec)
		} else {
			conn, retry, err = openRelay(g.s, conf.Network, rec)
		}
		if err != nil {
			if retry {
				continue // port taken
			}
			break
		}
		rec.conn = conn
		g.s.relays.add(rec)
		return conn, net.UDPAddrFromAddrPort(rec.advertised), nil
	}
	g.s.quotas.release(conf.UserID)
	return nil, nil, fmt.Errorf("%w: %s %d-%d", ErrNoRelayPort, conf.Network, g.ports.Min, g.ports.Max)
}

// AllocateListener implements turn.RelayAddressGenerator for RFC 6062 TCP allocations.
func (g *relayAddresses) AllocateListener(conf turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	fr, err := g.family(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	if err := g.s.reserveRelay(conf.UserID); err != nil {
		return nil, nil, err
	}
	// SO_REUSEPORT lets Connect dial out from the relay port; it would also let two relay
	// listeners share a port, so ports this server already uses are skipped explicitly.
	lc := net.ListenConfig{Control: reuseport.Control}
	for _, p := range g.candidatePorts(conf.RequestedPort) {
		bind := netip.AddrPortFrom(fr.bind, p)
		if g.s.relays.tcpBound(bind) {
			continue
		}
		ln, err := lc.Listen(context.Background(), conf.Network, bind.String())
		if err != nil {
			continue
		}
		rec := &relayRecord{network: "tcp", advertised: netip.AddrPortFrom(fr.advertised, p), bind: bind, user: conf.UserID, clientTLS: g.tls}
		g.s.relays.add(rec)
		return &relayListener{Listener: ln, s: g.s, rec: rec}, net.TCPAddrFromAddrPort(rec.advertised), nil
	}
	g.s.quotas.release(conf.UserID)
	return nil, nil, fmt.Errorf("%w: %s %d-%d", ErrNoRelayPort, conf.Network, g.ports.Min, g.ports.Max)
}

// AllocateConn implements turn.RelayAddressGenerator: the outgoing peer connection of an
// RFC 6062 Connect, from the relay's bound (not advertised) address.
func (g *relayAddresses) AllocateConn(conf turn.AllocateConnConfig) (net.Conn, error) {
	rec := g.s.relays.lookupAdvertised("tcp", conf.LocalAddr)
	if rec == nil {
		return nil, errors.New("connect: relay is gone")
	}
	peer := addrPortOf(conf.RemoteAddr)
	if ok, name := g.s.sendAllowed("tcp", peer); !ok {
		g.s.m.peerRefused.WithLabelValues(name).Inc()
		return nil, fmt.Errorf("connect: peer %s refused", peer)
	}
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(rec.bind), Control: reuseport.Control, Timeout: connectTimeout}
	conn, err := d.Dial(conf.Network, peer.String())
	if err != nil {
		return nil, err
	}
	return newCountingConn(conn, g.s, rec), nil
}
