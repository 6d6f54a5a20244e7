package turnserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus"

	"icehub/auth"
	"icehub/internal/metrictest"
	"icehub/turnserver/internal/stunwire"
)

// Helpers for the abuse tests (abuse_test.go, flood_test.go, permission_test.go): a server
// with its own Prometheus registry, a raw STUN/TURN client that can put any bytes on the wire,
// and "sinks" — listeners that must never receive anything the relay was asked to forward.

// startServerReg is startServer with a fresh Prometheus registry the test can gather. It
// logs at warn: refusals are logged at info, one line each, and thousands would drown the output.
func startServerReg(t *testing.T, mod func(*Config)) (*testServer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return newTestServer(t, mod, slog.LevelWarn, reg), reg
}

func refusedIn(t *testing.T, reg *prometheus.Registry, rangeName string) float64 {
	return metrictest.Value(t, reg, "icehub_turn_peer_refused_total", map[string]string{"range": rangeName})
}

// rawAttr adds an attribute with exactly the given value bytes.
type rawAttr struct {
	typ stun.AttrType
	v   []byte
}

func (a rawAttr) AddTo(m *stun.Message) error { m.Add(a.typ, a.v); return nil }

func requestedUDP() stun.Setter { return rawAttr{stun.AttrRequestedTransport, []byte{17, 0, 0, 0}} }

func requestedFamily(fam byte) stun.Setter {
	return rawAttr{stun.AttrRequestedAddressFamily, []byte{fam, 0, 0, 0}}
}

func channelNumber(n uint16) stun.Setter {
	return rawAttr{stun.AttrChannelNumber, []byte{byte(n >> 8), byte(n), 0, 0}}
}

// xorPeer is an XOR-PEER-ADDRESS written by hand so that any encoding can be sent: v6wire
// puts an IPv4 address on the wire as IPv4-mapped IPv6 (family 2), as abuse tools do.
type xorPeer struct {
	ap     netip.AddrPort
	v6wire bool
}

func (p xorPeer) AddTo(m *stun.Message) error {
	var cookie [4]byte
	binary.BigEndian.PutUint32(cookie[:], stunwire.MagicCookie)
	port := p.ap.Port() ^ uint16(stunwire.MagicCookie>>16)
	if p.ap.Addr().Is4() && !p.v6wire {
		v := make([]byte, 8)
		v[1] = 1
		binary.BigEndian.PutUint16(v[2:4], port)
		ip := p.ap.Addr().As4()
		for i := range 4 {
			v[4+i] = ip[i] ^ cookie[i]
		}
		m.Add(stun.AttrXORPeerAddress, v)
		return nil
	}
	v := make([]byte, 20)
	v[1] = 2
	binary.BigEndian.PutUint16(v[2:4], port)
	ip := p.ap.Addr().As16()
	key := append(cookie[:], m.TransactionID[:]...)
	for i := range 16 {
		v[4+i] = ip[i] ^ key[i]
	}
	m.Add(stun.AttrXORPeerAddress, v)
	return nil
}

// rawTURN is a TURN client on one connected UDP socket that builds every message itself.
// Anything that arrives other than a response to its own request (a Data indication,
// ChannelData) is counted in leaked: in these tests nothing may ever come back from a peer.
type rawTURN struct {
	t                      *testing.T
	conn                   *net.UDPConn
	user, pass, realm, non string
	relay                  netip.AddrPort
	leaked                 atomic.Int64
	sent                   *requestTally // if set, notes every authenticated Allocate written
}

// requestTally notes the authenticated Allocate requests a client wrote, by transaction:
// retransmissions are the same transaction written again, and a server counts each it
// processes.
type requestTally struct {
	mu     sync.Mutex
	writes map[[stun.TransactionIDSize]byte]int
}

func (r *requestTally) note(b []byte) {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil || m.Type != stun.NewType(stun.MethodAllocate, stun.ClassRequest) ||
		!m.Contains(stun.AttrMessageIntegrity) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.writes == nil {
		r.writes = map[[stun.TransactionIDSize]byte]int{}
	}
	r.writes[m.TransactionID]++
}

// counts returns how many transactions were noted, and how many writes (retransmissions
// included) they took.
func (r *requestTally) counts() (transactions, writes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.writes {
		writes += n
	}
	return len(r.writes), writes
}

func newRawTURN(t *testing.T, server string, cr auth.Credentials) *rawTURN {
	t.Helper()
	return newRawTURNFrom(t, "127.0.0.1:0", server, cr)
}

func newRawTURNFrom(t *testing.T, local, server string, cr auth.Credentials) *rawTURN {
	t.Helper()
	la, err := net.ResolveUDPAddr("udp4", local)
	if err != nil {
		t.Fatal(err)
	}
	ra, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialUDP("udp4", la, ra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawTURN{t: t, conn: conn, user: cr.Username, pass: cr.Password}
}

// build makes a message of method/class with attrs, authenticated once a nonce is known.
func (c *rawTURN) build(method stun.Method, class stun.MessageClass, attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	s := []stun.Setter{stun.TransactionID, stun.NewType(method, class)}
	s = append(s, attrs...)
	if c.non != "" && class == stun.ClassRequest {
		s = append(s, stun.NewUsername(c.user), stun.NewRealm(c.realm), stun.NewNonce(c.non),
			stun.NewLongTermIntegrity(c.user, c.realm, c.pass))
	}
	s = append(s, stun.Fingerprint)
	m, err := stun.Build(s...)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

var errNoAnswer = errors.New("no answer")

// roundTrip sends m and waits for the response with its transaction ID, retransmitting.
func (c *rawTURN) roundTrip(m *stun.Message) (*stun.Message, error) {
	buf := make([]byte, 2048)
	for try := 0; try < 4; try++ {
		if c.sent != nil {
			c.sent.note(m.Raw)
		}
		if _, err := c.conn.Write(m.Raw); err != nil {
			return nil, err
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(time.Duration(200<<try) * time.Millisecond))
		for {
			n, err := c.conn.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				return nil, err
			}
			if !stun.IsMessage(buf[:n]) {
				c.leaked.Add(1) // ChannelData from a peer
				continue
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if res.Decode() != nil {
				continue
			}
			if res.Type.Class == stun.ClassIndication {
				c.leaked.Add(1) // a Data indication from a peer
				continue
			}
			if res.TransactionID == m.TransactionID {
				return res, nil
			}
		}
	}
	return nil, fmt.Errorf("%v: %w", m.Type, errNoAnswer)
}

// request performs an authenticated request (learning realm and nonce from a 401 or 438)
// and returns the error code of the final answer, 0 for success.
func (c *rawTURN) request(method stun.Method, attrs ...stun.Setter) (int, *stun.Message) {
	c.t.Helper()
	for range 3 {
		res, err := c.roundTrip(c.build(method, stun.ClassRequest, attrs...))
		if err != nil {
			c.t.Fatalf("%v: %v", method, err)
		}
		code := codeOf(res)
		if (code == 401 && c.non == "") || code == 438 {
			var r stun.Realm
			var n stun.Nonce
			if r.GetFrom(res) != nil || n.GetFrom(res) != nil {
				c.t.Fatalf("%v: %d without realm/nonce", method, code)
			}
			c.realm, c.non = r.String(), n.String()
			continue
		}
		return code, res
	}
	c.t.Fatalf("%v: still challenged", method)
	return 0, nil
}

func codeOf(m *stun.Message) int {
	if m.Type.Class != stun.ClassErrorResponse {
		return 0
	}
	var ec stun.ErrorCodeAttribute
	if ec.GetFrom(m) != nil {
		return -1
	}
	return int(ec.Code)
}

// allocate makes a UDP allocation of family fam (0: default, 1 IPv4, 2 IPv6).
func (c *rawTURN) allocate(fam byte) int {
	c.t.Helper()
	attrs := []stun.Setter{requestedUDP()}
	if fam != 0 {
		attrs = append(attrs, requestedFamily(fam))
	}
	code, res := c.request(stun.MethodAllocate, attrs...)
	if code != 0 {
		return code
	}
	var ra stun.XORMappedAddress
	if err := ra.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		c.t.Fatalf("allocate: %v", err)
	}
	ip, _ := netip.AddrFromSlice(ra.IP)
	c.relay = netip.AddrPortFrom(ip.Unmap(), uint16(ra.Port))
	return 0
}

// sendIndication sends data to peer in a Send indication (no answer is expected).
func (c *rawTURN) sendIndication(peer xorPeer, data []byte) {
	c.t.Helper()
	m := c.build(stun.MethodSend, stun.ClassIndication, peer, rawAttr{stun.AttrData, data})
	if _, err := c.conn.Write(m.Raw); err != nil {
		c.t.Fatal(err)
	}
}

// channelData sends data on channel ch.
func (c *rawTURN) channelData(ch uint16, data []byte) {
	c.t.Helper()
	b := make([]byte, 4+(len(data)+3)&^3)
	binary.BigEndian.PutUint16(b[0:2], ch)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(data)))
	copy(b[4:], data)
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// drain reads whatever arrives for d and counts it as leaked.
func (c *rawTURN) drain(d time.Duration) {
	buf := make([]byte, 2048)
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	for {
		if _, err := c.conn.Read(buf); err != nil {
			return
		}
		c.leaked.Add(1)
	}
}

// sinks are UDP sockets and TCP listeners on several local IPs, all on one port, that
// record anything that reaches them.
type sinks struct {
	port     int
	mu       sync.Mutex
	received []string
}

// newSinks binds UDP and TCP on port P of every ip (P is chosen free on all of them).
func newSinks(t *testing.T, ips ...string) *sinks {
	t.Helper()
	for range 50 {
		s, ok := tryBindSinks(t, ips)
		if ok {
			return s
		}
	}
	t.Fatal("no port free on every sink address")
	return nil
}

func tryBindSinks(t *testing.T, ips []string) (*sinks, bool) {
	s := &sinks{}
	var closers []func()
	fail := func() (*sinks, bool) {
		for _, c := range closers {
			c()
		}
		return nil, false
	}
	for _, ip := range ips {
		ap := netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(s.port))
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return fail()
		}
		closers = append(closers, func() { _ = pc.Close() })
		if s.port == 0 {
			s.port = pc.LocalAddr().(*net.UDPAddr).Port
			ap = netip.AddrPortFrom(ap.Addr(), uint16(s.port))
		}
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
		if err != nil {
			return fail()
		}
		closers = append(closers, func() { _ = ln.Close() })
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				s.record(fmt.Sprintf("udp %s got %d bytes from %s", ap, n, from))
			}
		}()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				s.record(fmt.Sprintf("tcp %s accepted %s", ap, c.RemoteAddr()))
				_ = c.Close()
			}
		}()
	}
	t.Cleanup(func() {
		for _, c := range closers {
			c()
		}
	})
	return s, true
}

func (s *sinks) record(what string) {
	s.mu.Lock()
	s.received = append(s.received, what)
	s.mu.Unlock()
}

func (s *sinks) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.received...)
}

// hasIPv6Loopback reports whether this host can bind [::1].
func hasIPv6Loopback() bool {
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		return false
	}
	_ = pc.Close()
	return true
}
