package turnserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// ErrPortShareClosed is returned by the split listeners' Accept once the PortShare is closed.
var ErrPortShareClosed = errors.New("portshare: closed")

// stunMagicCookie sits at bytes 4..8 of every RFC 5389+ STUN message.
const stunMagicCookie = 0x2112A442

// PortShare serves TURN over TLS and HTTPS on one port (443, for clients behind firewalls that
// pass nothing else): after the TLS handshake a connection whose first bytes are a STUN message
// goes to the TURN listener, anything else to the HTTP listener. Both see already-decrypted
// streams.
type PortShare struct {
	ln        net.Listener
	tls       *tls.Config
	log       *slog.Logger
	turn, web *chanListener
	timeout   time.Duration
	closeOnce sync.Once
	done      chan struct{}
}

// PortShareConfig configures NewPortShare. HandshakeTimeout bounds the TLS handshake plus the
// first 8 bytes, so a silent client cannot hold a goroutine (default 10s).
type PortShareConfig struct {
	Listener         net.Listener
	TLS              *tls.Config
	Logger           *slog.Logger
	HandshakeTimeout time.Duration
}

// NewPortShare starts accepting on cfg.Listener; read the split streams from TURN() and HTTP().
func NewPortShare(cfg PortShareConfig) (*PortShare, error) {
	if cfg.Listener == nil || cfg.TLS == nil {
		return nil, errors.New("portshare: listener and TLS config are required")
	}
	p := &PortShare{
		ln: cfg.Listener, tls: cfg.TLS, log: cfg.Logger, timeout: cfg.HandshakeTimeout,
		done: make(chan struct{}),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.timeout <= 0 {
		p.timeout = 10 * time.Second
	}
	p.turn = newChanListener(cfg.Listener.Addr(), p.done)
	p.web = newChanListener(cfg.Listener.Addr(), p.done)
	go p.acceptLoop()
	return p, nil
}

// TURN returns the listener of connections that opened with a STUN message.
func (p *PortShare) TURN() net.Listener { return p.turn }

// HTTP returns the listener of every other connection.
func (p *PortShare) HTTP() net.Listener { return p.web }

// Addr is the shared port's address.
func (p *PortShare) Addr() net.Addr { return p.ln.Addr() }

// Close stops accepting; connections already handed over stay with their owners.
func (p *PortShare) Close() error {
	var err error
	p.closeOnce.Do(func() {
		close(p.done)
		err = p.ln.Close()
	})
	return err
}

func (p *PortShare) acceptLoop() {
	var delay time.Duration
	for {
		c, err := p.ln.Accept()
		if err != nil {
			select {
			case <-p.done:
				return
			default:
			}
			// Out of descriptors or a transient error: back off instead of spinning.
			p.log.Warn("portshare accept", "err", err)
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go p.route(c)
	}
}

// route finishes the handshake, peeks the first bytes and hands the stream over.
func (p *PortShare) route(raw net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	tc := tls.Server(raw, p.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		p.log.Debug("portshare handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		return
	}
	_ = tc.SetReadDeadline(time.Now().Add(p.timeout))
	br := bufio.NewReaderSize(tc, 2048)
	head, err := br.Peek(8)
	if err != nil {
		tc.Close()
		return
	}
	_ = tc.SetReadDeadline(time.Time{})
	conn := &peekedConn{Conn: tc, r: br}
	dst := p.web
	if IsSTUNHeader(head) {
		dst = p.turn
	}
	if !dst.deliver(conn) {
		conn.Close()
	}
}

// IsSTUNHeader reports whether b starts like a STUN message: top two bits zero and the magic
// cookie at bytes 4..8. HTTP requests start with an ASCII method name, which never matches.
func IsSTUNHeader(b []byte) bool {
	return len(b) >= 8 && b[0]&0xC0 == 0 && binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie
}

// peekedConn replays the bytes PortShare peeked at before the rest of the stream.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// chanListener is a net.Listener fed by PortShare. Closing it refuses further hand-overs to it
// without closing the shared port.
type chanListener struct {
	addr      net.Addr
	ch        chan net.Conn
	done      <-chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func newChanListener(addr net.Addr, done <-chan struct{}) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: done, closed: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, ErrPortShareClosed
	case <-l.closed:
		return nil, ErrPortShareClosed
	}
}

func (l *chanListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
