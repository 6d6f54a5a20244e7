package turnserver

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"icehub/turnserver/internal/stunwire"
)

// Idle limits for TURN over TCP/TLS: a client must deliver a whole frame within preAuthIdle
// until it has authenticated once, so half-sent frames cannot hold descriptors (slowloris);
// after that, authIdle is longer than an allocation can live without a Refresh. Apart from
// these, a connection without an allocation is closed after turn.allocate_timeout.
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

// Accept hands pion connections within the per-IP cap, and retries what passes: pion's
// accept loop ends for good on the first error, so one moment without file descriptors
// would otherwise stop TURN over TCP and TLS until a restart.
func (l *streamListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			if !transientAcceptErr(err) {
				return nil, err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.adm.s.log.Warn("turn accept failed; retrying", "err", err, "in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if c := l.open(conn); c != nil {
			return c, nil
		}
	}
}

// open wraps conn, or closes it when its IP is at turn.max_conns_per_ip.
func (l *streamListener) open(conn net.Conn) *streamConn {
	s := l.adm.s
	pol := s.policy.Load()
	ip := addrPortOf(conn.RemoteAddr()).Addr()
	c := &streamConn{Conn: conn, adm: l.adm, br: bufio.NewReader(conn), ip: ip}
	if !s.conns.open(c, ip, pol.maxConnsPerIP) {
		s.m.connRefused.Inc()
		if s.sourceLog.allow(ip, s.now()) {
			s.log.Info("turn connection refused: per-IP limit", "client", conn.RemoteAddr().String(), "max_conns_per_ip", pol.maxConnsPerIP)
		}
		_ = conn.Close()
		return nil
	}
	if d := pol.allocateTimeout; d > 0 {
		c.allocTimer = time.AfterFunc(d, c.allocateTimeout)
	}
	return c
}

func transientAcceptErr(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) || errors.As(err, &ne) && ne.Timeout()
}

// streamConn hands pion's STUN framer one whole, admitted frame per Read and passes what
// pion writes through admission's outgoing rewrite. A connection turns transparent — raw
// peer data, RFC 6062 section 5.4 — only once pion has answered its ConnectionBind with
// success; until then it stays framed, admitted and timed like any other.
type streamConn struct {
	// mu serializes Read: after a ConnectionBind pion reads the connection from a copy
	// goroutine while its read loop may still call Read once more, and bufio is not safe
	// for that. Write never takes mu (Read holds it while it waits for the client).
	mu sync.Mutex
	net.Conn
	adm     *admission
	br      *bufio.Reader
	buf     []byte
	pending []byte
	authed  bool
	ip      netip.Addr

	raw           atomic.Bool
	hasAllocation atomic.Bool
	rec           atomic.Pointer[relayRecord] // the allocation's relay, for the bitrate caps
	allocTimer    *time.Timer
	closeOnce     sync.Once

	bindMu      sync.Mutex
	bindPending bool
	bindTxID    [12]byte
}

func (c *streamConn) authenticated() { c.authed = true }

// allocateTimeout closes a connection that still has no allocation and is not an RFC 6062
// data connection.
func (c *streamConn) allocateTimeout() {
	if !c.hasAllocation.Load() && !c.raw.Load() {
		c.adm.s.m.connTimedOut.Inc()
		_ = c.close(false) // this is the timer's goroutine: allocTimer is not ordered with it
	}
}

func (c *streamConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.raw.Load() {
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
			c.adm.s.noteClientGone(c.Conn.RemoteAddr(), c.Conn.LocalAddr())
			return 0, err
		}
		c.buf = f[:0]
		out, ok := c.adm.admit(f, c.Conn.RemoteAddr(), c)
		if !ok {
			continue
		}
		if h, ok := stunwire.ParseHeader(out); ok && h.Class() == stunwire.ClassRequest && h.Method() == stunwire.MethodConnBind {
			c.bindMu.Lock()
			c.bindPending, c.bindTxID = true, stunwire.TransactionID(out)
			c.bindMu.Unlock()
		}
		n := copy(p, out)
		c.pending = append(c.pending[:0], out[n:]...)
		return n, nil
	}
}

// Write sends what pion writes; a ConnectionBind success response for the pending
// ConnectionBind turns the connection into a data connection.
func (c *streamConn) Write(b []byte) (int, error) {
	if c.raw.Load() {
		return c.Conn.Write(b)
	}
	if !c.adm.s.frameWithinCaps(c.rec.Load(), b) {
		return len(b), nil // relayed data over a bitrate cap: the whole frame is dropped
	}
	if c.isBindSuccess(b) {
		// The data starts after this response; until the peer talks, the connection is as
		// idle as the peer is.
		c.raw.Store(true)
		_ = c.Conn.SetReadDeadline(time.Time{})
		if c.allocTimer != nil {
			c.allocTimer.Stop()
		}
	}
	if _, err := c.Conn.Write(c.adm.outgoing(b, c.Conn.RemoteAddr())); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *streamConn) isBindSuccess(b []byte) bool {
	h, ok := stunwire.ParseHeader(b)
	if !ok || h.Method() != stunwire.MethodConnBind || h.Class() != stunwire.ClassSuccess {
		return false
	}
	c.bindMu.Lock()
	defer c.bindMu.Unlock()
	return c.bindPending && stunwire.TransactionID(b) == c.bindTxID
}

func (c *streamConn) scratch() []byte            { return make([]byte, 0, answerMax) }
func (c *streamConn) reply(b []byte, _ net.Addr) { _, _ = c.Conn.Write(b) }

// Close closes the connection once and gives its place in the per-IP count back.
func (c *streamConn) Close() error { return c.close(true) }

func (c *streamConn) close(stopTimer bool) error {
	var err error
	c.closeOnce.Do(func() {
		if stopTimer && c.allocTimer != nil {
			c.allocTimer.Stop()
		}
		c.adm.s.conns.close(c, c.ip)
		err = c.Conn.Close()
	})
	return err
}
