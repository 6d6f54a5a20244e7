package turnserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"icehub/auth"
	"icehub/config"
	"icehub/internal/echopeer"
)

const (
	testSecret1 = "first-secret-0123"
	testSecret2 = "second-secret-4567"
	testTimeout = 10 * time.Second
)

type testServer struct {
	srv  *Server
	ring *auth.Ring
	udp  string // UDP listen address
	tcp  string // TCP listen address
	cfg  Config
	logs *logCounter
}

// logCounter is a slog.Handler that counts the records it lets through, by message.
type logCounter struct {
	slog.Handler
	mu sync.Mutex
	n  map[string]int
}

func (l *logCounter) Handle(ctx context.Context, r slog.Record) error {
	l.mu.Lock()
	l.n[r.Message]++
	l.mu.Unlock()
	return l.Handler.Handle(ctx, r)
}

func (l *logCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return &logShare{Handler: l.Handler.WithAttrs(as), c: l}
}

func (l *logCounter) WithGroup(g string) slog.Handler {
	return &logShare{Handler: l.Handler.WithGroup(g), c: l}
}

// logShare is a derived handler (With) that counts into the same logCounter.
type logShare struct {
	slog.Handler
	c *logCounter
}

func (l *logShare) Handle(ctx context.Context, r slog.Record) error {
	l.c.mu.Lock()
	l.c.n[r.Message]++
	l.c.mu.Unlock()
	return l.Handler.Handle(ctx, r)
}

// count returns how many records with message msg were logged.
func (l *logCounter) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[msg]
}

// defaultSettings are server.toml's defaults for the reloadable keys.
var defaultSettings = Settings{
	MaxAllocationsPerUser: 10, MaxAllocations: 10000, MaxAllocationsPerIP: 512, TCPRelay: true,
	AnswerAllowance: 4096, AnswerRefill: 256, IntegrityRate: 1000, IntegrityBurst: 2000,
	MaxConnsPerIP: 256, AllocateTimeout: time.Minute,
}

// baseConfig is a loopback configuration with the project defaults otherwise (the ring,
// logger and registry are filled in by newTestServer).
func baseConfig() Config {
	s := defaultSettings
	// Tests hammer the server from one address (loopback): room for that, while each
	// limit has its own test with the defaults.
	s.AnswerAllowance, s.AnswerRefill = 1<<20, 1<<20
	s.MaxAllocationsPerIP = 0
	return Config{
		Listen:     []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Realm:      "icehub",
		RelayPorts: PortRange{Min: 61000, Max: 64999}, // outside Linux's ephemeral range, so client sockets cannot take a reserved RTCP port
		UDPSockets: 2,
		Settings:   s,
	}
}

func startServer(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	return newTestServer(t, mod, slog.LevelInfo, nil)
}

// newTestServer starts a server on loopback with both test secrets, logging at level into
// the test's output, and exporting metrics to reg when it is not nil.
func newTestServer(t *testing.T, mod func(*Config), level slog.Level, reg prometheus.Registerer) *testServer {
	t.Helper()
	tc := baseConfig()
	ring, err := auth.NewRing(auth.Config{Secrets: []string{testSecret1, testSecret2}})
	if err != nil {
		t.Fatal(err)
	}
	w := &testWriter{w: t.Output()}
	t.Cleanup(w.stop) // registered first, so it runs after the server's Close
	logs := &logCounter{Handler: slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}), n: map[string]int{}}
	tc.Ring, tc.Logger, tc.Registerer = ring, slog.New(logs), reg
	if mod != nil {
		mod(&tc)
	}
	srv, err := New(tc)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	addrs := srv.Addrs()
	return &testServer{srv: srv, ring: ring, udp: addrs[0].String(), tcp: addrs[1].String(), cfg: tc, logs: logs}
}

// creds mints credentials for user under the first secret.
func (ts *testServer) creds(t *testing.T, user string) auth.Credentials {
	t.Helper()
	c, err := ts.ring.Mint(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// udpClient returns a pion client talking UDP to the server.
func udpClient(t *testing.T, server, username, password string) *turn.Client {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startClient(t, conn, server, username, password, 0)
}

func startClient(t *testing.T, conn net.PacketConn, server, username, password string, fam turn.RequestedAddressFamily) *turn.Client {
	t.Helper()
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: username, Password: password, Realm: "icehub",
		RTO: 100 * time.Millisecond, RequestedAddressFamily: fam,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); _ = conn.Close() })
	return c
}

// notingConn is a net.PacketConn (a pion client's) that shows note each datagram, or
// frame on a stream, it writes.
type notingConn struct {
	net.PacketConn
	note func([]byte)
}

func (c notingConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.note(b)
	return c.PacketConn.WriteTo(b, addr)
}

// RemoteAddr is the wrapped conn's, which pion's client asks a stream conn for.
func (c notingConn) RemoteAddr() net.Addr {
	if rc, ok := c.PacketConn.(interface{ RemoteAddr() net.Addr }); ok {
		return rc.RemoteAddr()
	}
	return nil
}

// tcpClient returns a pion client talking TCP to the server.
func tcpClient(t *testing.T, server, username, password string) *turn.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", server, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return startClient(t, turn.NewSTUNConn(conn), server, username, password, 0)
}

// turnCode extracts the STUN error code from a pion client error, or 0.
func turnCode(err error) int {
	var te stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	var tp *stun.TurnError
	if errors.As(err, &tp) {
		return int(tp.ErrorCodeAttr.Code)
	}
	return 0
}

// udpEcho starts a UDP echo peer on 127.0.0.1.
func udpEcho(t *testing.T) *net.UDPAddr {
	t.Helper()
	return echopeer.Start(t).Addr
}

// tcpEcho starts a TCP echo peer on 127.0.0.1.
func tcpEcho(t *testing.T) *net.TCPAddr {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 2048)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// roundTrip sends msg through relay to peer and waits for the echo.
func roundTrip(t *testing.T, relay net.PacketConn, peer net.Addr, msg string) {
	t.Helper()
	buf := make([]byte, 2048)
	// Retry a few times: UDP may lose the first datagram while the permission settles.
	for try := 0; try < 5; try++ {
		if _, err := relay.WriteTo([]byte(msg), peer); err != nil {
			t.Fatalf("WriteTo: %v", err)
		}
		_ = relay.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := relay.ReadFrom(buf)
		if err != nil {
			continue
		}
		if string(buf[:n]) != msg || from.String() != peer.String() {
			t.Fatalf("got %q from %s, want %q from %s", buf[:n], from, msg, peer)
		}
		return
	}
	t.Fatalf("no echo of %q from %s", msg, peer)
}

func loopbackAllowed(c *Config) {
	c.Settings.AllowPeers = []netip.Prefix{mustPrefix("127.0.0.1/32")}
}

func mustPrefix(s string) netip.Prefix {
	var p config.Prefix
	if err := p.UnmarshalText([]byte(s)); err != nil {
		panic(err)
	}
	return p.Prefix
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func ioReadFull(r io.Reader, b []byte) (int, error) { return io.ReadFull(r, b) }

// noEcho asserts that nothing sent to peer through relay comes back: the server dropped it.
func noEcho(t *testing.T, relay net.PacketConn, peer net.Addr) {
	t.Helper()
	if _, err := relay.WriteTo([]byte("must not pass"), peer); err != nil {
		t.Fatal(err)
	}
	_ = relay.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	defer relay.SetReadDeadline(time.Time{})
	buf := make([]byte, 100)
	if n, from, err := relay.ReadFrom(buf); err == nil {
		t.Fatalf("got %q from %s; the filter should have dropped it", buf[:n], from)
	}
}

// testWriter forwards to the test's output until the test ends; pion tears allocations
// down asynchronously and their last log lines must not write to a finished test.
type testWriter struct {
	mu      sync.Mutex
	w       io.Writer
	stopped bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return len(p), nil
	}
	return w.w.Write(p)
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

func (l *logShare) WithAttrs(as []slog.Attr) slog.Handler {
	return &logShare{Handler: l.Handler.WithAttrs(as), c: l.c}
}

func (l *logShare) WithGroup(g string) slog.Handler {
	return &logShare{Handler: l.Handler.WithGroup(g), c: l.c}
}

// total returns how many records were logged at all.
func (l *logCounter) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, v := range l.n {
		n += v
	}
	return n
}
