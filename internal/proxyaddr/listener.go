// Package proxyaddr recovers a client's address behind load balancers and reverse proxies,
// from sources the operator trusts and from nobody else: the PROXY protocol header (v1 or
// v2, parsed by github.com/pires/go-proxyproto) that L4 balancers such as AWS NLB or
// HAProxy put before a TCP stream (Listen), and the X-Forwarded-For or Forwarded header HTTP
// reverse proxies add to requests (Client).
//
// Bytes that look like a header from any other source are not a header: they are the
// stream's (or the request's) like any other bytes, so a client cannot claim an address by
// sending one.
package proxyaddr

import (
	"container/list"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// Mode is what a connection's source may send before its first byte.
type Mode uint8

const (
	// Direct sources are clients: what they send is theirs, a PROXY header included.
	Direct Mode = iota
	// Optional sources are trusted proxies that may send a PROXY header; an HTTP reverse
	// proxy, which says who its client is in a request header instead, sends none.
	Optional
	// Required sources are trusted proxies that must send a PROXY header; a connection
	// without one (nothing within the timeout, or other bytes) is closed.
	Required
)

// Defaults of Config.
const (
	// DefaultHeaderTimeout bounds the wait for a header from accept. A balancer sends it
	// at once (HAProxy) or with the client's first bytes (AWS NLB), and TURN, TLS and HTTP
	// clients all speak first, so only a silent or hostile client takes this long.
	DefaultHeaderTimeout = 5 * time.Second
	// DefaultMaxPending bounds the connections whose header is awaited at once.
	DefaultMaxPending = 1024
)

// Rejection reasons passed to Config.Rejected.
const (
	ReasonMissing = "missing" // Required, and no header within the timeout or other bytes
	ReasonInvalid = "invalid" // a header that does not parse
	ReasonEvicted = "evicted" // closed unresolved to make room under MaxPending
)

// Config configures Listen.
type Config struct {
	// Mode is asked once per connection with its socket peer's IP (IPv4 unmapped); it may
	// read state a reload swaps. nil: every connection is Direct.
	Mode func(peer netip.Addr) Mode
	// HeaderTimeout bounds the wait for the header, counted from accept, so a header sent
	// byte by byte gets no longer than a silent connection. 0: DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// MaxPending bounds the connections from trusted sources whose header is still
	// awaited. When a new one would exceed it, the oldest is closed: an honest balancer's
	// header arrives within a round trip, so under a flood of silent connections (what a
	// client behind the balancer can open at will, and cannot be counted against its own
	// address until the header names it) honest ones still get through, and the flood
	// costs at most MaxPending descriptors. 0: DefaultMaxPending.
	MaxPending int
	// Rejected, when set, is told of each connection from a trusted source closed for its
	// header, with one of the Reason constants. It must not block.
	Rejected func(peer netip.AddrPort, reason string, err error)
}

// Listener hands out connections whose PROXY header, where their source must or may send
// one, has been read: RemoteAddr is then the client the header names. Headers are read off
// the accept loop, in a goroutine per connection, so a silent source never delays anyone
// else's Accept and no caller can block on a lazy RemoteAddr.
type Listener struct {
	ln  net.Listener
	cfg Config
	out chan accepted

	mu      sync.Mutex
	pending *list.List // of *pendingConn, oldest first
	closed  bool

	done      chan struct{}
	closeOnce sync.Once
}

type accepted struct {
	c   net.Conn
	err error
}

type pendingConn struct {
	raw     net.Conn
	evicted bool
}

// Listen wraps ln (a TCP listener) and starts accepting on it.
func Listen(ln net.Listener, cfg Config) *Listener {
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = DefaultHeaderTimeout
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	l := &Listener{ln: ln, cfg: cfg, out: make(chan accepted), pending: list.New(), done: make(chan struct{})}
	go l.loop()
	return l
}

// Accept returns the next connection, or the error the wrapped listener's Accept returned
// (its caller decides whether to retry, and backs off as it would without this wrapper).
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case a := <-l.out:
		return a.c, a.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close closes the wrapped listener and every connection still waiting for its header.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.ln.Close()
		l.mu.Lock()
		l.closed = true
		for e := l.pending.Front(); e != nil; e = e.Next() {
			_ = e.Value.(*pendingConn).raw.Close()
		}
		l.pending.Init()
		l.mu.Unlock()
	})
	return err
}

// Addr is the wrapped listener's address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

func (l *Listener) loop() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			// Handing the error over waits for the next Accept call, which paces a listener
			// out of descriptors at its caller's back-off.
			if !l.deliver(accepted{err: err}) || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		mode := Direct
		if l.cfg.Mode != nil {
			mode = l.cfg.Mode(peerOf(c).Addr())
		}
		if mode == Direct {
			if !l.deliver(accepted{c: c}) {
				_ = c.Close()
				return
			}
			continue
		}
		e := l.track(c)
		if e == nil {
			_ = c.Close()
			return
		}
		go l.resolve(c, e, mode)
	}
}

// track records c as pending, first closing the oldest pending connection when MaxPending
// are already waiting. It returns nil once the listener is closed.
func (l *Listener) track(c net.Conn) *list.Element {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	if l.pending.Len() >= l.cfg.MaxPending {
		oldest := l.pending.Remove(l.pending.Front()).(*pendingConn)
		oldest.evicted = true
		_ = oldest.raw.Close() // its resolve goroutine reports it
	}
	return l.pending.PushBack(&pendingConn{raw: c})
}

// untrack removes a resolved connection and reports whether it had been evicted meanwhile.
func (l *Listener) untrack(e *list.Element) (evicted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := e.Value.(*pendingConn)
	if !p.evicted && !l.closed {
		l.pending.Remove(e)
	}
	return p.evicted
}

// resolve reads c's header (or, for Optional, its absence) within the header timeout and
// hands the connection over, or closes it.
func (l *Listener) resolve(raw net.Conn, e *list.Element, mode Mode) {
	policy := proxyproto.USE
	if mode == Required {
		policy = proxyproto.REQUIRE
	}
	pc := proxyproto.NewConn(raw, proxyproto.WithPolicy(policy), proxyproto.SetReadHeaderTimeout(l.cfg.HeaderTimeout))
	// A zero-length Read runs the library's header detection and returns its error, and
	// reads nothing of what follows the header (that stays buffered in pc).
	_, err := pc.Read(nil)
	if l.untrack(e) {
		l.reject(raw, ReasonEvicted, err)
		return
	}
	if err != nil {
		select {
		case <-l.done: // closed by Close, not for its header
			_ = raw.Close()
		default:
			reason := ReasonInvalid
			if errors.Is(err, proxyproto.ErrNoProxyProtocol) {
				reason = ReasonMissing
			}
			l.reject(raw, reason, err)
		}
		return
	}
	c := &Conn{Conn: pc, remote: clientAddr(pc.ProxyHeader(), raw.RemoteAddr())}
	if !l.deliver(accepted{c: c}) {
		_ = raw.Close()
	}
}

func (l *Listener) reject(raw net.Conn, reason string, err error) {
	if l.cfg.Rejected != nil {
		l.cfg.Rejected(peerOf(raw), reason, err)
	}
	_ = raw.Close()
}

// deliver hands a to the next Accept; false once the listener is closed.
func (l *Listener) deliver(a accepted) bool {
	select {
	case l.out <- a:
		return true
	case <-l.done:
		return false
	}
}

// Conn is a connection from a trusted source whose header has been read. RemoteAddr is the
// client's address the header carried (the proxy's own when it sent none, or a LOCAL
// header such as a health check's); LocalAddr stays this host's socket address, which is
// what the TURN server's relay family and the hub's own-origin check must see.
type Conn struct {
	*proxyproto.Conn
	remote net.Addr
}

// RemoteAddr returns the client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr returns the socket's local address, not the header's destination.
func (c *Conn) LocalAddr() net.Addr { return c.Raw().LocalAddr() }

// Proxy returns the address of the proxy the connection came from.
func (c *Conn) Proxy() net.Addr { return c.Raw().RemoteAddr() }

// clientAddr is the source a PROXY command header carries, as a *net.TCPAddr with IPv4
// unmapped; any other header (LOCAL, UNKNOWN, a Unix socket) leaves the socket's peer.
func clientAddr(h *proxyproto.Header, peer net.Addr) net.Addr {
	if h == nil || !h.Command.IsProxy() {
		return peer
	}
	var ip net.IP
	var port int
	switch a := h.SourceAddr.(type) {
	case *net.TCPAddr:
		ip, port = a.IP, a.Port
	case *net.UDPAddr:
		ip, port = a.IP, a.Port
	default:
		return peer
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok || port < 0 || port > 65535 {
		return peer
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr.Unmap(), uint16(port)))
}

// peerOf is a connection's socket peer address, IPv4 unmapped.
func peerOf(c net.Conn) netip.AddrPort {
	var ap netip.AddrPort
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else {
		ap, _ = netip.ParseAddrPort(c.RemoteAddr().String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Contains reports whether ip, IPv4-mapped or not, is in one of prefixes.
func Contains(prefixes []netip.Prefix, ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
