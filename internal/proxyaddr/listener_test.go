package proxyaddr

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

const testTimeout = 5 * time.Second

// The balancer dials from 127.0.0.1; a client dials directly from 127.0.0.2.
var (
	balancerIP = net.IPv4(127, 0, 0, 1)
	clientIP   = net.IPv4(127, 0, 0, 2)
	// carried is the client address the test balancer's headers name.
	carried = &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40123}
	vip     = &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 443}
)

type rejection struct {
	peer   netip.AddrPort
	reason string
}

type testListener struct {
	*Listener
	mu       sync.Mutex
	rejected []rejection
}

func (tl *testListener) rejections() []rejection {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return append([]rejection(nil), tl.rejected...)
}

// listen starts a Listener on loopback where 127.0.0.1 has mode and every other source is
// Direct.
func listen(t *testing.T, mode Mode, cfg Config) *testListener {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := &testListener{}
	cfg.Mode = func(ip netip.Addr) Mode {
		if ip == netip.MustParseAddr("127.0.0.1") {
			return mode
		}
		return Direct
	}
	cfg.Rejected = func(peer netip.AddrPort, reason string, _ error) {
		tl.mu.Lock()
		tl.rejected = append(tl.rejected, rejection{peer, reason})
		tl.mu.Unlock()
	}
	tl.Listener = Listen(ln, cfg)
	t.Cleanup(func() { _ = tl.Close() })
	return tl
}

func dialFrom(t *testing.T, from net.IP, to net.Addr) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp4", &net.TCPAddr{IP: from}, to.(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// header returns a PROXY header of version naming carried as the client.
func header(t *testing.T, version byte) []byte {
	t.Helper()
	b, err := proxyproto.HeaderProxyFromAddrs(version, carried, vip).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// acceptOne runs Accept with a timeout.
func acceptOne(t *testing.T, l net.Listener) (net.Conn, error) {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.c != nil {
			t.Cleanup(func() { _ = r.c.Close() })
		}
		return r.c, r.err
	case <-time.After(testTimeout):
		t.Fatal("Accept did not return")
		return nil, nil
	}
}

// readN reads n bytes from c within the test timeout.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

// closedByServer reports whether the server ends c within d (EOF or reset, not a timeout).
func closedByServer(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.ReadAll(c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// A v1 or v2 header from a Required source names the client: RemoteAddr is the carried
// address, LocalAddr the socket's own, and the bytes after the header arrive intact.
func TestRequiredHeaderCarriesTheClient(t *testing.T) {
	for _, v := range []byte{1, 2} {
		l := listen(t, Required, Config{})
		c := dialFrom(t, balancerIP, l.Addr())
		payload := []byte("first bytes of the client's stream")
		if _, err := c.Write(append(header(t, v), payload...)); err != nil {
			t.Fatal(err)
		}
		got, err := acceptOne(t, l)
		if err != nil {
			t.Fatal(err)
		}
		if got.RemoteAddr().String() != carried.String() {
			t.Fatalf("v%d: RemoteAddr %s, want the carried %s", v, got.RemoteAddr(), carried)
		}
		if got.LocalAddr().String() != l.Addr().String() {
			t.Fatalf("v%d: LocalAddr %s, want the socket's %s", v, got.LocalAddr(), l.Addr())
		}
		if p := got.(*Conn).Proxy().String(); p != c.LocalAddr().String() {
			t.Fatalf("v%d: Proxy %s, want %s", v, p, c.LocalAddr())
		}
		if b := readN(t, got, len(payload)); !bytes.Equal(b, payload) {
			t.Fatalf("v%d: read %q after the header, want %q", v, b, payload)
		}
		// And back: the stream is an ordinary connection.
		if _, err := got.Write([]byte("ok")); err != nil {
			t.Fatal(err)
		}
		if b := readN(t, c, 2); string(b) != "ok" {
			t.Fatalf("v%d: answer %q", v, b)
		}
	}
}

// A Required source that says nothing is closed after the header timeout and one that
// sends something else at once; neither is handed to Accept.
func TestRequiredWithoutHeaderIsClosed(t *testing.T) {
	l := listen(t, Required, Config{HeaderTimeout: 300 * time.Millisecond})
	silent := dialFrom(t, balancerIP, l.Addr())
	start := time.Now()
	other := dialFrom(t, balancerIP, l.Addr())
	if _, err := other.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if !closedByServer(other, testTimeout) {
		t.Fatal("a connection from a Required source without a header was not closed")
	}
	if !closedByServer(silent, testTimeout) {
		t.Fatal("a silent connection from a Required source was not closed")
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("silent connection closed after %s, before the 300ms header timeout", d)
	}
	// Neither reached Accept: the next connection Accept returns is a good one.
	good := dialFrom(t, balancerIP, l.Addr())
	if _, err := good.Write(header(t, 2)); err != nil {
		t.Fatal(err)
	}
	c, err := acceptOne(t, l)
	if err != nil || c.RemoteAddr().String() != carried.String() {
		t.Fatalf("Accept: %v, %v; want the good connection from %s", c, err, carried)
	}
	rs := l.rejections()
	if len(rs) != 2 || rs[0].reason != ReasonMissing || rs[1].reason != ReasonMissing || rs[0].peer.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("rejections %v, want two %q from 127.0.0.1", rs, ReasonMissing)
	}
}

// A header that starts right but does not parse is refused as invalid.
func TestInvalidHeaderIsClosed(t *testing.T) {
	l := listen(t, Required, Config{})
	c := dialFrom(t, balancerIP, l.Addr())
	if _, err := c.Write([]byte("PROXY TCP4 not-an-ip 198.51.100.1 1 443\r\n")); err != nil {
		t.Fatal(err)
	}
	if !closedByServer(c, testTimeout) {
		t.Fatal("connection with a bad header not closed")
	}
	if rs := l.rejections(); len(rs) != 1 || rs[0].reason != ReasonInvalid {
		t.Fatalf("rejections %v, want one %q", rs, ReasonInvalid)
	}
}

// A header from a Direct source is not a header: the connection is handed over as it is,
// with its real address, and the header's bytes are the stream's first bytes.
func TestDirectSourceHeaderIsData(t *testing.T) {
	l := listen(t, Required, Config{})
	c := dialFrom(t, clientIP, l.Addr())
	h := header(t, 1)
	if _, err := c.Write(h); err != nil {
		t.Fatal(err)
	}
	got, err := acceptOne(t, l)
	if err != nil {
		t.Fatal(err)
	}
	if got.RemoteAddr().String() != c.LocalAddr().String() {
		t.Fatalf("RemoteAddr %s, want the real %s", got.RemoteAddr(), c.LocalAddr())
	}
	if b := readN(t, got, len(h)); !bytes.Equal(b, h) {
		t.Fatalf("read %q, want the header bytes as data", b)
	}
	if _, ok := got.(*net.TCPConn); !ok {
		t.Fatalf("a direct connection is handed over unwrapped, got %T", got)
	}
}

// An Optional source may send a header (used) or not (served under its own address, its
// first bytes intact).
func TestOptionalHeader(t *testing.T) {
	l := listen(t, Optional, Config{})
	with := dialFrom(t, balancerIP, l.Addr())
	if _, err := with.Write(append(header(t, 2), 'x')); err != nil {
		t.Fatal(err)
	}
	got, err := acceptOne(t, l)
	if err != nil || got.RemoteAddr().String() != carried.String() {
		t.Fatalf("with a header: %v, %v", got, err)
	}
	without := dialFrom(t, balancerIP, l.Addr())
	req := []byte("POST /api HTTP/1.1\r\n")
	if _, err := without.Write(req); err != nil {
		t.Fatal(err)
	}
	got, err = acceptOne(t, l)
	if err != nil {
		t.Fatal(err)
	}
	if got.RemoteAddr().String() != without.LocalAddr().String() {
		t.Fatalf("without a header: RemoteAddr %s, want %s", got.RemoteAddr(), without.LocalAddr())
	}
	if b := readN(t, got, len(req)); !bytes.Equal(b, req) {
		t.Fatalf("read %q, want %q", b, req)
	}
}

// A LOCAL header (a balancer's health check) leaves the balancer's own address.
func TestLocalHeaderKeepsThePeer(t *testing.T) {
	l := listen(t, Required, Config{})
	c := dialFrom(t, balancerIP, l.Addr())
	b, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	got, err := acceptOne(t, l)
	if err != nil {
		t.Fatal(err)
	}
	if got.RemoteAddr().String() != c.LocalAddr().String() {
		t.Fatalf("RemoteAddr %s, want the balancer's %s", got.RemoteAddr(), c.LocalAddr())
	}
}

// Silent connections from a trusted source hold nobody up: Accept hands over good
// connections, direct or proxied, while they wait.
func TestSilentConnectionsDoNotBlockAccept(t *testing.T) {
	l := listen(t, Required, Config{HeaderTimeout: time.Minute})
	for range 20 {
		dialFrom(t, balancerIP, l.Addr())
	}
	d := dialFrom(t, clientIP, l.Addr())
	c, err := acceptOne(t, l)
	if err != nil || c.RemoteAddr().String() != d.LocalAddr().String() {
		t.Fatalf("direct connection: %v, %v", c, err)
	}
	p := dialFrom(t, balancerIP, l.Addr())
	if _, err := p.Write(header(t, 2)); err != nil {
		t.Fatal(err)
	}
	c, err = acceptOne(t, l)
	if err != nil || c.RemoteAddr().String() != carried.String() {
		t.Fatalf("proxied connection: %v, %v", c, err)
	}
}

// At MaxPending waiting connections the oldest is closed for each new one: a flood of
// silent connections holds at most MaxPending descriptors and an honest one, whose header
// comes at once, still gets through.
func TestMaxPendingEvictsTheOldest(t *testing.T) {
	l := listen(t, Required, Config{HeaderTimeout: time.Minute, MaxPending: 4})
	var silent []*net.TCPConn
	for range 10 {
		silent = append(silent, dialFrom(t, balancerIP, l.Addr()))
	}
	for i, c := range silent[:6] {
		if !closedByServer(c, testTimeout) {
			t.Fatalf("silent connection %d of 10 not evicted under MaxPending 4", i+1)
		}
	}
	for i, c := range silent[6:] {
		if closedByServer(c, 200*time.Millisecond) {
			t.Fatalf("silent connection %d, among the 4 newest, was closed", 7+i)
		}
	}
	good := dialFrom(t, balancerIP, l.Addr())
	if _, err := good.Write(header(t, 1)); err != nil {
		t.Fatal(err)
	}
	c, err := acceptOne(t, l)
	if err != nil || c.RemoteAddr().String() != carried.String() {
		t.Fatalf("honest connection during the flood: %v, %v", c, err)
	}
	// Evictions are reported by each connection's own goroutine, after the close.
	evictions := func() int {
		n := 0
		for _, r := range l.rejections() {
			if r.reason == ReasonEvicted {
				n++
			}
		}
		return n
	}
	// Six made room for the newer silent ones, one for the honest connection.
	for deadline := time.Now().Add(testTimeout); evictions() < 7 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := evictions(); n != 7 {
		t.Fatalf("%d evictions reported, want 7", n)
	}
}

// Close closes the connections still waiting for their header, and Accept then fails.
func TestCloseClosesPending(t *testing.T) {
	l := listen(t, Required, Config{HeaderTimeout: time.Minute})
	c := dialFrom(t, balancerIP, l.Addr())
	time.Sleep(50 * time.Millisecond) // accepted and waiting
	_ = l.Close()
	if !closedByServer(c, testTimeout) {
		t.Fatal("pending connection left open by Close")
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if rs := l.rejections(); len(rs) != 0 {
		t.Fatalf("Close reported as header rejections: %v", rs)
	}
}
