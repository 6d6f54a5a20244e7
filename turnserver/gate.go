package turnserver

import (
	"bufio"
	"net"
	"net/netip"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
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
	user, passwords, err := g.c.ring.Passwords(string(username))
	if err != nil {
		return nil, nil, "", false
	}
	msg := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := msg.Decode(); err != nil {
		return nil, nil, "", false
	}
	for _, pw := range passwords {
		key := turn.GenerateAuthKey(string(username), g.c.realm, pw)
		if stun.MessageIntegrity(key).Check(msg) == nil {
			return msg, key, user, true
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

// gatedPacketConn is a UDP listen socket whose reads pass the gate.
type gatedPacketConn struct {
	net.PacketConn
	g *gate
}

func (p *gatedPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := p.PacketConn.ReadFrom(b)
		if err != nil || p.g.inspect(b[:n], addr, p) {
			return n, addr, err
		}
	}
}

func (p *gatedPacketConn) reply(b []byte, to net.Addr) { _, _ = p.PacketConn.WriteTo(b, to) }

// gatedListener is a TCP listener whose connections pass the gate frame by frame.
type gatedListener struct {
	net.Listener
	g *gate
}

func (l *gatedListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &frameConn{Conn: conn, g: l.g, br: bufio.NewReader(conn)}, nil
}

// frameConn hands pion's STUN framer one whole, inspected frame per Read. After a
// ConnectionBind the connection carries raw peer data (RFC 6062), so it turns transparent.
type frameConn struct {
	net.Conn
	g       *gate
	br      *bufio.Reader
	buf     []byte
	pending []byte
	raw     bool
}

func (c *frameConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.raw {
		return c.br.Read(p)
	}
	for {
		f, err := readFrame(c.br, c.buf)
		if err != nil {
			return 0, err
		}
		c.buf = f[:0]
		if !c.g.inspect(f, c.Conn.RemoteAddr(), c) {
			continue
		}
		if h, ok := parseSTUNHeader(f); ok && h.class() == classRequest && h.method() == methodConnBind {
			c.raw = true
		}
		n := copy(p, f)
		c.pending = f[n:]
		return n, nil
	}
}

func (c *frameConn) reply(b []byte, _ net.Addr) { _, _ = c.Conn.Write(b) }
