package turnserver

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"

	"icehub/auth"
	"icehub/internal/metrictest"
	"icehub/internal/testcert"
)

// The test balancer connects from 127.0.0.1, which turn.proxy_from lists; 127.0.0.2 is a
// client that connects directly.
var (
	balancerIP  = net.IPv4(127, 0, 0, 1)
	directIP    = net.IPv4(127, 0, 0, 2)
	balancerNet = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	// vip is the balancer's public address, the destination in the headers it sends.
	vip = &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 3478}
)

// proxyHeader returns a PROXY header of version (1 or 2) naming client.
func proxyHeader(t *testing.T, version byte, client *net.TCPAddr) []byte {
	t.Helper()
	dst := vip
	if client.IP.To4() == nil {
		dst = &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 3478}
	}
	b, err := proxyproto.HeaderProxyFromAddrs(version, client, dst).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dialVia connects from local to addr and, when header is not nil, sends it first, as a
// balancer does for its client.
func dialVia(t *testing.T, local net.IP, addr string, header []byte) net.Conn {
	t.Helper()
	conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: testTimeout}).Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if header != nil {
		if _, err := conn.Write(header); err != nil {
			t.Fatal(err)
		}
	}
	return conn
}

// proxiedStream is a streamClient behind the test balancer, its PROXY header naming client.
func proxiedStream(t *testing.T, addr string, version byte, client *net.TCPAddr, cr auth.Credentials) *streamClient {
	t.Helper()
	conn := dialVia(t, balancerIP, addr, proxyHeader(t, version, client))
	return &streamClient{t: t, conn: conn, br: newReader(conn), cr: cr}
}

// pionVia returns pion's client over conn (already past any PROXY header and TLS).
func pionVia(t *testing.T, conn net.Conn, server string, cr auth.Credentials) *turn.Client {
	t.Helper()
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: turn.NewSTUNConn(conn),
		Username: cr.Username, Password: cr.Password, Realm: "icehub", RTO: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// serverClosed reports whether the server ends conn within d: EOF or a reset, not a timeout.
func serverClosed(conn net.Conn, d time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}

// A Binding over TCP through the balancer, with a v1 or a v2 header, IPv4 or IPv6, gets the
// client's address in XOR-MAPPED-ADDRESS (pion's client asks), not the balancer's.
func TestProxyHeaderBindingOverTCP(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Settings.ProxyFrom = balancerNet })
	for _, tc := range []struct {
		version byte
		client  *net.TCPAddr
	}{
		{1, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40123}},
		{2, &net.TCPAddr{IP: net.ParseIP("203.0.113.8"), Port: 40124}},
		{1, &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 40125}},
		{2, &net.TCPAddr{IP: net.ParseIP("2001:db8::8"), Port: 40126}},
	} {
		conn := dialVia(t, balancerIP, ts.tcp, proxyHeader(t, tc.version, tc.client))
		got, err := pionVia(t, conn, ts.tcp, auth.Credentials{}).SendBindingRequest()
		if err != nil {
			t.Fatalf("v%d %s: Binding: %v", tc.version, tc.client, err)
		}
		if got.String() != tc.client.String() {
			t.Fatalf("v%d: XOR-MAPPED-ADDRESS %s, want the carried %s", tc.version, got, tc.client)
		}
	}
}

// logRecords keeps the records a server logs, with their attributes.
type logRecords struct {
	mu   sync.Mutex
	recs []map[string]string
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	l.mu.Lock()
	l.recs = append(l.recs, m)
	l.mu.Unlock()
	return nil
}

// find returns the records with message msg.
func (l *logRecords) find(msg string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.recs {
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// Two clients behind one balancer, with different carried addresses, each get their own
// turn.max_conns_per_ip and turn.max_allocations_per_ip budget, while one of them hits its
// cap; the balancer's own address is charged nothing, and the allocation is logged (and its
// 5-tuple kept) under the client's address.
func TestProxyHeaderLimitsPerCarriedAddress(t *testing.T) {
	logs := &logRecords{}
	ts := startServer(t, func(c *Config) {
		c.Settings.ProxyFrom = balancerNet
		c.Settings.MaxConnsPerIP = 2
		c.Settings.MaxAllocationsPerIP = 1
		c.Logger = slog.New(logs)
	})
	alice := func(port int) *net.TCPAddr { return &net.TCPAddr{IP: net.ParseIP("203.0.113.10"), Port: port} }
	bob := func(port int) *net.TCPAddr { return &net.TCPAddr{IP: net.ParseIP("203.0.113.20"), Port: port} }
	cr := ts.creds(t, "u")

	a1 := proxiedStream(t, ts.tcp, 2, alice(1001), cr)
	if code := a1.request(stun.MethodAllocate, requestedUDP()); code != 0 {
		t.Fatalf("alice's first allocation: %d", code)
	}
	a2 := proxiedStream(t, ts.tcp, 1, alice(1002), cr)
	if code := a2.request(stun.MethodAllocate, requestedUDP()); code != 486 {
		t.Fatalf("alice's second allocation: %d, want 486 (max_allocations_per_ip 1)", code)
	}
	// Alice holds two connections: a third is closed at once.
	a3 := proxiedStream(t, ts.tcp, 2, alice(1003), cr)
	if !serverClosed(a3.conn, 2*time.Second) {
		t.Fatal("alice's third connection was not closed (max_conns_per_ip 2)")
	}
	// Bob, behind the same balancer, has his own budgets.
	b1 := proxiedStream(t, ts.tcp, 2, bob(2001), cr)
	if code := b1.request(stun.MethodAllocate, requestedUDP()); code != 0 {
		t.Fatalf("bob's allocation while alice is at her caps: %d", code)
	}
	b2 := proxiedStream(t, ts.tcp, 1, bob(2002), cr)
	if code := b2.request(stun.MethodBinding); code != 0 {
		t.Fatalf("bob's second connection: %d", code)
	}
	created := logs.find("turn allocation created")
	if len(created) != 2 || created[0]["client"] != alice(1001).String() || created[1]["client"] != bob(2001).String() {
		t.Fatalf("allocations logged as %v, want alice's %s then bob's %s", created, alice(1001), bob(2001))
	}
	refused := logs.find("turn allocation refused: per-IP quota")
	if len(refused) != 1 || refused[0]["client"] != alice(1002).String() {
		t.Fatalf("per-IP refusal logged as %v, want alice's %s", refused, alice(1002))
	}
	if conns := logs.find("turn connection refused: per-IP limit"); len(conns) != 1 || conns[0]["client"] != alice(1003).String() {
		t.Fatalf("connection refusal logged as %v, want alice's %s", conns, alice(1003))
	}
	// Freeing alice's allocation (Refresh 0, the 5-tuple of her first connection) gives
	// her place back.
	if code := a1.request(stun.MethodRefresh, rawAttr{stun.AttrLifetime, []byte{0, 0, 0, 0}}); code != 0 {
		t.Fatalf("alice's Refresh 0: %d", code)
	}
	time.Sleep(100 * time.Millisecond)
	if code := a2.request(stun.MethodAllocate, requestedUDP()); code != 0 {
		t.Fatalf("alice's allocation after she freed one: %d", code)
	}
}

// A connection from the balancer that sends no header is closed after the header timeout,
// one that sends something else (a Binding) at once, unanswered; both are counted.
func TestProxyHeaderMissing(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, func(c *Config) {
		c.Settings.ProxyFrom = balancerNet
		c.proxyHeaderTimeout = 300 * time.Millisecond
	}, slog.LevelInfo, reg)
	start := time.Now()
	silent := dialVia(t, balancerIP, ts.tcp, nil)
	if !serverClosed(silent, 5*time.Second) {
		t.Fatal("a silent connection from proxy_from was not closed")
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("silent connection closed after %s, before the 300ms header timeout", d)
	}
	bare := dialVia(t, balancerIP, ts.tcp, stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	c := &streamClient{t: t, conn: bare, br: newReader(bare)}
	if m, err := c.read(); err == nil {
		t.Fatalf("a Binding from proxy_from without a header was answered: %v", m)
	}
	if v := metrictest.Value(t, reg, "icehub_turn_proxy_header_refused_total", map[string]string{"reason": "missing"}); v != 2 {
		t.Fatalf("proxy_header_refused_total{reason=missing} = %v, want 2", v)
	}
	if n := ts.logs.count("turn connection closed: PROXY header"); n != 2 {
		t.Fatalf("%d log lines for the two refused connections, want 2", n)
	}
}

// A header from a source not in turn.proxy_from is not trusted: its bytes are TURN framing,
// which they are not, so the connection gets no answer — never one naming the header's
// address — and is closed (a v2 header at once, a v1 header at the idle timeout). The same
// source without a header is served under its own address, as without proxy_from. A reload
// that lists the source makes its next connections' headers count.
func TestProxyHeaderFromUntrustedSource(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.Settings.ProxyFrom = balancerNet
		c.preAuthIdle = time.Second
	})
	forged := &net.TCPAddr{IP: net.ParseIP("203.0.113.66"), Port: 5000}
	bind := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	for _, v := range []byte{2, 1} {
		conn := dialVia(t, directIP, ts.tcp, append(proxyHeader(t, v, forged), bind...))
		start := time.Now()
		c := &streamClient{t: t, conn: conn, br: newReader(conn)}
		if m, err := c.read(); err == nil {
			t.Fatalf("v%d header from an untrusted source: answered %v", v, m)
		}
		if !serverClosed(conn, 3*time.Second) {
			t.Fatalf("v%d header from an untrusted source: connection left open", v)
		}
		t.Logf("v%d header from an untrusted source: closed after %s", v, time.Since(start).Round(time.Millisecond))
	}
	direct := dialVia(t, directIP, ts.tcp, nil)
	got, err := pionVia(t, direct, ts.tcp, auth.Credentials{}).SendBindingRequest()
	if err != nil || got.String() != direct.LocalAddr().String() {
		t.Fatalf("direct client: XOR-MAPPED-ADDRESS %v (%v), want its own %s", got, err, direct.LocalAddr())
	}

	set := ts.cfg.Settings
	set.ProxyFrom = append(balancerNet, netip.MustParsePrefix("127.0.0.2/32"))
	commit, err := ts.srv.PrepareReload(set)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	client := &net.TCPAddr{IP: net.ParseIP("203.0.113.67"), Port: 5001}
	conn := dialVia(t, directIP, ts.tcp, proxyHeader(t, 2, client))
	got, err = pionVia(t, conn, ts.tcp, auth.Credentials{}).SendBindingRequest()
	if err != nil || got.String() != client.String() {
		t.Fatalf("after the reload: XOR-MAPPED-ADDRESS %v (%v), want the carried %s", got, err, client)
	}
}

// TURN over TLS behind the balancer: the PROXY header comes before the handshake, and the
// client's allocation relays while its Binding names the carried address.
func TestProxyHeaderBeforeTLS(t *testing.T) {
	cert := testcert.New(t)
	crt, pool := cert.TLS, cert.Pool
	ts := startServer(t, func(c *Config) {
		c.Settings.ProxyFrom = balancerNet
		c.TLSListen = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}
		c.TLS = &tls.Config{Certificates: []tls.Certificate{crt}}
		loopbackAllowed(c)
	})
	tlsAddr := ts.srv.Addrs()[2].String()
	client := &net.TCPAddr{IP: net.ParseIP("203.0.113.30"), Port: 44444}
	raw := dialVia(t, balancerIP, tlsAddr, proxyHeader(t, 2, client))
	tc := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake after the PROXY header: %v", err)
	}
	c := pionVia(t, tc, tlsAddr, ts.creds(t, "tls-user"))
	got, err := c.SendBindingRequest()
	if err != nil || got.String() != client.String() {
		t.Fatalf("XOR-MAPPED-ADDRESS over TLS %v (%v), want the carried %s", got, err, client)
	}
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate over TLS through the balancer: %v", err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	roundTrip(t, relay, udpEcho(t), "through the balancer")

	// Without the header, the balancer's TLS connection is refused before any handshake.
	bare := dialVia(t, balancerIP, tlsAddr, nil)
	if err := tls.Client(bare, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}).Handshake(); err == nil {
		t.Fatal("TLS handshake from proxy_from without a PROXY header succeeded")
	}
}

// The answer credit follows the carried address too: one client behind the balancer that
// spends its address's allowance on unauthenticated requests (401s cost more than they
// carry) gets no more answers, while another client of the same balancer still does.
func TestProxyHeaderAnswerCreditPerCarriedAddress(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.Settings.ProxyFrom = balancerNet
		c.Settings.AnswerAllowance, c.Settings.AnswerRefill = 256, 0
	})
	allocate := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP()).Raw
	answered := func(client *net.TCPAddr) bool {
		c := proxiedStream(t, ts.tcp, 2, client, auth.Credentials{})
		if err := c.write(allocate); err != nil {
			t.Fatal(err)
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.br.Peek(1)
		return err == nil
	}
	n := 0
	for port := 1; port <= 10; port++ {
		if answered(&net.TCPAddr{IP: net.ParseIP("203.0.113.10"), Port: port}) {
			n++
		}
	}
	if n == 0 || n == 10 {
		t.Fatalf("%d of 10 unauthenticated requests from one carried address answered; want its allowance spent part way", n)
	}
	if !answered(&net.TCPAddr{IP: net.ParseIP("203.0.113.20"), Port: 1}) {
		t.Fatal("another client behind the same balancer got no answer: the allowance was charged to the balancer")
	}
}
