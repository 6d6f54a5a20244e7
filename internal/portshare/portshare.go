// Package portshare serves two protocols over TLS on one port (TURN over TLS and HTTPS on
// 443, for clients behind firewalls that pass nothing else): after the TLS handshake it peeks
// the first bytes of the decrypted stream and hands the connection to one of two listeners.
// Which bytes mean what is the caller's business (Config.IsFirst).
package portshare

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// ErrClosed is returned by the split listeners' Accept once the Splitter is closed.
var ErrClosed = errors.New("portshare: closed")

// Splitter accepts TLS connections on one listener and splits them between First (the
// connections whose first decrypted bytes Config.IsFirst accepts) and Rest. Both hand out
// already-decrypted streams.
type Splitter struct {
	ln          net.Listener
	tls         *tls.Config
	log         *slog.Logger
	isFirst     func([]byte) bool
	peek        int
	first, rest *chanListener
	timeout     time.Duration
	closeOnce   sync.Once
	done        chan struct{}
}

// Config configures New. HandshakeTimeout bounds the TLS handshake plus the first PeekLen
// bytes, so a silent client cannot hold a goroutine (default 10s).
type Config struct {
	// Listener is the shared port. Whatever must come before the TLS handshake (a PROXY
	// header) is its business: main hands a proxyaddr.Listener, which reads the header
	// before Accept returns, so RemoteAddr is already the client's here.
	Listener         net.Listener
	TLS              *tls.Config
	Logger           *slog.Logger
	HandshakeTimeout time.Duration
	// IsFirst classifies a connection by its first PeekLen decrypted bytes.
	IsFirst func(head []byte) bool
	PeekLen int
}

// New starts accepting on cfg.Listener; read the split streams from First() and Rest().
func New(cfg Config) (*Splitter, error) {
	if cfg.Listener == nil || cfg.TLS == nil || cfg.IsFirst == nil || cfg.PeekLen <= 0 {
		return nil, errors.New("portshare: listener, TLS config, IsFirst and PeekLen are required")
	}
	p := &Splitter{
		ln: cfg.Listener, tls: cfg.TLS, log: cfg.Logger, timeout: cfg.HandshakeTimeout,
		isFirst: cfg.IsFirst, peek: cfg.PeekLen, done: make(chan struct{}),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.timeout <= 0 {
		p.timeout = 10 * time.Second
	}
	p.first = newChanListener(cfg.Listener.Addr(), p.done)
	p.rest = newChanListener(cfg.Listener.Addr(), p.done)
	go p.acceptLoop()
	return p, nil
}

// First returns the listener of connections IsFirst accepted.
func (p *Splitter) First() net.Listener { return p.first }

// Rest returns the listener of every other connection.
func (p *Splitter) Rest() net.Listener { return p.rest }

// Addr is the shared port's address.
func (p *Splitter) Addr() net.Addr { return p.ln.Addr() }

// Close stops accepting; connections already handed over stay with their owners.
func (p *Splitter) Close() error {
	var err error
	p.closeOnce.Do(func() {
		close(p.done)
		err = p.ln.Close()
	})
	return err
}

func (p *Splitter) acceptLoop() {
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
func (p *Splitter) route(raw net.Conn) {
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
	head, err := br.Peek(p.peek)
	if err != nil {
		tc.Close()
		return
	}
	_ = tc.SetReadDeadline(time.Time{})
	conn := &peekedConn{Conn: tc, r: br}
	dst := p.rest
	if p.isFirst(head) {
		dst = p.first
	}
	if !dst.deliver(conn) {
		conn.Close()
	}
}

// peekedConn replays the bytes the Splitter peeked at before the rest of the stream.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// chanListener is a net.Listener fed by a Splitter. Closing it refuses further hand-overs to it
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
		return nil, ErrClosed
	case <-l.closed:
		return nil, ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
