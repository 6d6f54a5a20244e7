package turnserver

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pion/stun/v4"
)

// gate inspects every client message before pion sees it. It verifies MESSAGE-INTEGRITY
// against all secrets (pion's AuthHandler can return only one key), rate-limits
// unauthenticated requests per source, and answers the few refusals pion would answer with
// the wrong code (442/400/440 on Allocate, 403 on ChannelBind).
type gate struct {
	c      *core
	gen    *relayGen
	stream bool // client transport is TCP (or TLS)
}

// replier sends a response on the transport the request came in on.
type replier interface {
	reply(b []byte, to net.Addr)
}

// inspect returns true when pion should process b, false when it was dropped or answered.
func (g *gate) inspect(b []byte, src net.Addr, r replier) bool {
	if isChannelData(b) {
		return true // the data path: pion looks the channel up, nothing to check here
	}
	h, ok := parseSTUNHeader(b)
	if !ok {
		return false
	}
	switch h.class() {
	case classIndication:
		return true // Send indications: pion relays them only for an allocation and permission
	case classRequest:
	default:
		return false // responses and errors are not for a server
	}
	if h.method() == methodBinding {
		g.c.m.bindings.Inc()
		return true
	}
	info := peekAttrs(b, h)
	if !info.hasIntegrity || len(info.username) == 0 {
		return g.allowUnauth(src)
	}
	msg, key, user, ok := g.verify(b, info.username)
	if !ok {
		// pion answers 401 and the AuthHandler counts why; a wrong key is as unauthenticated
		// as none, so it spends the same per-source budget.
		return g.allowUnauth(src)
	}
	if code, refuse := g.refusal(msg, h.method(), info, src); refuse {
		if resp, err := stun.Build(stun.NewTransactionIDSetter(msg.TransactionID),
			stun.NewType(msg.Type.Method, stun.ClassErrorResponse), code,
			stun.MessageIntegrity(key), stun.Fingerprint); err == nil {
			r.reply(resp.Raw, src)
		}
		return false
	}
	g.c.keys.put(cacheID(src.String(), string(info.username)),
		cachedKey{user: user, key: key, expires: g.c.now().Add(keyCacheTTL)})
	if a, ok := r.(interface{ authenticated() }); ok {
		a.authenticated()
	}
	return true
}

func (g *gate) allowUnauth(src net.Addr) bool {
	if g.c.settings.Load().limiter.allow(addrPortOf(src).Addr(), g.c.now()) {
		return true
	}
	g.c.m.unauthDrop.Inc()
	return false
}

// verify finds the secret whose key checks the message's MESSAGE-INTEGRITY.
func (g *gate) verify(b, username []byte) (*stun.Message, []byte, string, bool) {
	e, ok := g.c.memo.keys(g.c.ring, g.c.realm, string(username), g.c.now())
	if !ok {
		return nil, nil, "", false
	}
	msg := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := msg.Decode(); err != nil {
		return nil, nil, "", false
	}
	for _, key := range e.keys {
		if stun.MessageIntegrity(key).Check(msg) == nil {
			g.c.memo.remember(string(username), e)
			return msg, key, e.user, true
		}
	}
	return nil, nil, "", false
}

// refusal returns the error code for an authenticated request this server refuses itself.
func (g *gate) refusal(msg *stun.Message, method uint16, info peekInfo, src net.Addr) (stun.ErrorCode, bool) {
	switch method {
	case methodAllocate:
		if info.transport == 6 { // TCP, RFC 6062
			if !g.stream {
				return stun.CodeBadRequest, true // RFC 6062 section 5.1: TCP relays need a TCP client
			}
			if !g.c.settings.Load().tcpRelay {
				return stun.CodeUnsupportedTransProto, true
			}
		}
		if (info.family == 1 && g.gen.v4 == nil) || (info.family == 2 && g.gen.v6 == nil) {
			return stun.CodeAddrFamilyNotSupported, true
		}
	case methodChanBind:
		// pion refuses a filtered ChannelBind with 401, which clients take for bad
		// credentials; the filter's answer is 403 like for CreatePermission.
		var peer stun.XORMappedAddress
		if err := peer.GetFromAs(msg, stun.AttrXORPeerAddress); err != nil {
			return 0, false
		}
		ip, ok := netip.AddrFromSlice(peer.IP)
		if !ok {
			return 0, false
		}
		if allowed, name := g.c.permit(ip.Unmap()); !allowed {
			g.c.refusePeer(src, ip.Unmap(), name, "channel-bind")
			return stun.CodeForbidden, true
		}
	}
	return 0, false
}

// gatedPacketConn is a UDP listen socket whose reads pass the gate. With the fast path
// (the usual case) the socket belongs to a relayLoop: the loop reads it in batches,
// relays ChannelData for allocations it knows and answers plain Binding requests itself,
// and hands every other datagram to pion's read loop through ReadFrom.
type gatedPacketConn struct {
	net.PacketConn // the socket as bound; without the fast path it is read and written directly
	g              *gate
	fast           fastTable
	loop           *relayLoop // nil without the fast path

	local net.Addr
	sock  rawSock         // the loop's descriptor of the socket, outside Go's poller
	in    chan slowPacket // datagrams for pion
	done  chan struct{}   // closed by Close
	once  sync.Once
}

// listenQueue bounds the datagrams waiting for pion's read loop; beyond it they are dropped
// as a full socket buffer would drop them.
const listenQueue = 1024

// newGatedPacketConn wraps a bound UDP socket. For the fast path the socket's descriptor is
// duplicated and the net.UDPConn closed, which takes the socket out of Go's poller (the
// relay loop's epoll set waits for it instead) without leaving its SO_REUSEPORT group.
func newGatedPacketConn(pc net.PacketConn, g *gate) *gatedPacketConn {
	p := &gatedPacketConn{PacketConn: pc, g: g, local: pc.LocalAddr()}
	udp, ok := pc.(*net.UDPConn)
	if !ok {
		return p
	}
	// Bursts queue in the kernel instead of being dropped while a core is busy elsewhere.
	_ = udp.SetReadBuffer(4 << 20)
	_ = udp.SetWriteBuffer(4 << 20)
	rc, err := udp.SyscallConn()
	if err != nil {
		return p
	}
	dup := -1
	if err := rc.Control(func(fd uintptr) {
		dup, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || dup < 0 {
		return p
	}
	p.sock = rawSock{fd: dup, v6: p.local.(*net.UDPAddr).IP.To4() == nil}
	p.in = make(chan slowPacket, listenQueue)
	p.done = make(chan struct{})
	loop, err := newRelayLoop(g.c, p)
	if err != nil {
		_ = unix.Close(dup)
		g.c.log.Warn("turn fast path off", "listen", p.local.String(), "err", err.Error())
		return &gatedPacketConn{PacketConn: pc, g: g, local: p.local}
	}
	p.loop = loop
	_ = udp.Close() // the duplicate keeps the socket
	return p
}

func (p *gatedPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if p.loop == nil {
		for {
			n, addr, err := p.PacketConn.ReadFrom(b)
			if err != nil || p.g.inspect(b[:n], addr, p) {
				return n, addr, err
			}
		}
	}
	for {
		select {
		case pkt := <-p.in:
			addr := net.UDPAddrFromAddrPort(pkt.src)
			if p.g.inspect(pkt.b, addr, p) {
				return copy(b, pkt.b), addr, nil
			}
		case <-p.done:
			return 0, nil, net.ErrClosed
		}
	}
}

// handOff queues a datagram for pion (a copy: the loop reuses its buffers).
func (p *gatedPacketConn) handOff(b []byte, src netip.AddrPort) {
	select {
	case p.in <- slowPacket{b: append([]byte(nil), b...), src: src}:
	default:
	}
}

func (p *gatedPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if p.loop == nil {
		return p.PacketConn.WriteTo(b, addr)
	}
	ap, ok := udpAddrPort(addr)
	if !ok {
		return 0, errFamily
	}
	if err := p.sock.send(b, ap); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (p *gatedPacketConn) reply(b []byte, to net.Addr) { _, _ = p.WriteTo(b, to) }

func (p *gatedPacketConn) LocalAddr() net.Addr { return p.local }

func (p *gatedPacketConn) SetDeadline(t time.Time) error {
	if p.loop == nil {
		return p.PacketConn.SetDeadline(t)
	}
	return nil
}

func (p *gatedPacketConn) SetReadDeadline(t time.Time) error {
	if p.loop == nil {
		return p.PacketConn.SetReadDeadline(t)
	}
	return nil
}

func (p *gatedPacketConn) SetWriteDeadline(t time.Time) error {
	if p.loop == nil {
		return p.PacketConn.SetWriteDeadline(t)
	}
	return nil
}

// Close stops the relay loop, then closes the socket; pion's read loop then ends.
func (p *gatedPacketConn) Close() error {
	if p.loop == nil {
		return p.PacketConn.Close()
	}
	p.once.Do(func() {
		p.loop.close()
		p.sock.close()
		close(p.done)
	})
	return nil
}

// gatedListener is a TCP listener whose connections pass the gate frame by frame.
type gatedListener struct {
	net.Listener
	g *gate
}

// Accept retries what passes: pion's accept loop ends for good on the first error, so one
// moment without file descriptors would otherwise stop TURN over TCP and TLS until a restart.
func (l *gatedListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		conn, err := l.Listener.Accept()
		if err == nil {
			return &frameConn{Conn: conn, g: l.g, br: bufio.NewReader(conn)}, nil
		}
		if !transientAcceptErr(err) {
			return nil, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		l.g.c.log.Warn("turn accept failed; retrying", "err", err, "in", delay)
		time.Sleep(delay)
	}
}

func transientAcceptErr(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) || errors.As(err, &ne) && ne.Timeout()
}

// Idle limits for TURN over TCP/TLS: a client must deliver a whole frame within preAuthIdle
// until it has authenticated once, so half-sent frames cannot hold descriptors (slowloris);
// after that, authIdle is longer than an allocation can live without a Refresh.
const (
	preAuthIdle = 30 * time.Second
	authIdle    = 15 * time.Minute
)

// frameConn hands pion's STUN framer one whole, inspected frame per Read. After a
// ConnectionBind the connection carries raw peer data (RFC 6062), so it turns transparent.
type frameConn struct {
	// mu serializes Read: after a ConnectionBind pion reads the connection from a copy
	// goroutine while its read loop may still call Read once more, and bufio is not safe for that.
	mu sync.Mutex
	net.Conn
	g       *gate
	br      *bufio.Reader
	buf     []byte
	pending []byte
	raw     bool
	authed  bool
}

func (c *frameConn) authenticated() { c.authed = true }

func (c *frameConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.raw {
		return c.br.Read(p)
	}
	for {
		idle := preAuthIdle
		if d := c.g.c.preAuthIdle.Load(); d > 0 {
			idle = time.Duration(d)
		}
		if c.authed {
			idle = authIdle
		}
		_ = c.Conn.SetReadDeadline(time.Now().Add(idle))
		f, err := readFrame(c.br, c.buf)
		if err != nil {
			return 0, err
		}
		c.buf = f[:0]
		if !c.g.inspect(f, c.Conn.RemoteAddr(), c) {
			continue
		}
		if h, ok := parseSTUNHeader(f); ok && h.class() == classRequest && h.method() == methodConnBind {
			// RFC 6062 data connection: raw peer bytes from here on, idle as long as the peer is.
			c.raw = true
			_ = c.Conn.SetReadDeadline(time.Time{})
		}
		n := copy(p, f)
		c.pending = f[n:]
		return n, nil
	}
}

func (c *frameConn) reply(b []byte, _ net.Addr) { _, _ = c.Conn.Write(b) }
