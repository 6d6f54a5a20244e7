package turnserver

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"icehub/turnserver/internal/stunwire"
)

// Idle limits for TURN over TCP/TLS: a client must deliver a whole frame within preAuthIdle
// until it has authenticated once, so half-sent frames cannot hold descriptors (slowloris);
// after that, authIdle is longer than an allocation can live without a Refresh.
const (
	preAuthIdle = 30 * time.Second
	authIdle    = 15 * time.Minute
)

// streamListener is a TCP or TLS listener whose connections pass admission frame by frame.
type streamListener struct {
	net.Listener
	adm *admission
}

func newStreamListener(ln net.Listener, adm *admission) *streamListener {
	return &streamListener{Listener: ln, adm: adm}
}

// Accept retries what passes: pion's accept loop ends for good on the first error, so one
// moment without file descriptors would otherwise stop TURN over TCP and TLS until a restart.
func (l *streamListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		conn, err := l.Listener.Accept()
		if err == nil {
			return &streamConn{Conn: conn, adm: l.adm, br: bufio.NewReader(conn)}, nil
		}
		if !transientAcceptErr(err) {
			return nil, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		l.adm.s.log.Warn("turn accept failed; retrying", "err", err, "in", delay)
		time.Sleep(delay)
	}
}

func transientAcceptErr(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) || errors.As(err, &ne) && ne.Timeout()
}

// streamConn hands pion's STUN framer one whole, admitted frame per Read. After a
// ConnectionBind the connection carries raw peer data (RFC 6062), so it turns transparent.
type streamConn struct {
	// mu serializes Read: after a ConnectionBind pion reads the connection from a copy
	// goroutine while its read loop may still call Read once more, and bufio is not safe for that.
	mu sync.Mutex
	net.Conn
	adm     *admission
	br      *bufio.Reader
	buf     []byte
	pending []byte
	raw     bool
	authed  bool
}

func (c *streamConn) authenticated() { c.authed = true }

func (c *streamConn) Read(p []byte) (int, error) {
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
		idle := c.adm.s.preAuthIdle
		if c.authed {
			idle = authIdle
		}
		_ = c.Conn.SetReadDeadline(time.Now().Add(idle))
		f, err := stunwire.ReadFrame(c.br, c.buf)
		if err != nil {
			return 0, err
		}
		c.buf = f[:0]
		if !c.adm.admit(f, c.Conn.RemoteAddr(), c) {
			continue
		}
		if h, ok := stunwire.ParseHeader(f); ok && h.Class() == stunwire.ClassRequest && h.Method() == stunwire.MethodConnBind {
			// RFC 6062 data connection: raw peer bytes from here on, idle as long as the peer is.
			c.raw = true
			_ = c.Conn.SetReadDeadline(time.Time{})
		}
		n := copy(p, f)
		c.pending = f[n:]
		return n, nil
	}
}

func (c *streamConn) reply(b []byte, _ net.Addr) { _, _ = c.Conn.Write(b) }
