package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"icehub/internal/testcert"

	"github.com/gorilla/websocket"
	"github.com/pion/turn/v5"
	"github.com/pires/go-proxyproto"
)

// The test balancer dials from 127.0.0.1 (listed in proxy_from); 127.0.0.2 is a stranger.
var (
	balancerIP = net.IPv4(127, 0, 0, 1)
	strangerIP = net.IPv4(127, 0, 0, 2)
)

// viaBalancer dials addr from local and sends a PROXY header of version naming client
// first, when client is not nil.
func viaBalancer(ctx context.Context, local net.IP, addr string, version byte, client *net.TCPAddr) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp4", addr)
	if err != nil || client == nil {
		return conn, err
	}
	dst := conn.RemoteAddr().(*net.TCPAddr)
	if _, err := proxyproto.HeaderProxyFromAddrs(version, client, dst).WriteTo(conn); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// wsVia opens /ws at url through the test balancer (a PROXY header naming client when it
// is not nil) with extra request headers; it returns the HTTP status (101 when open).
func wsVia(t *testing.T, url string, local net.IP, version byte, client *net.TCPAddr, hdr http.Header, tc *tls.Config) int {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: tc,
		NetDialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return viaBalancer(ctx, local, addr, version, client)
		}}
	conn, resp, err := d.Dial(url, hdr)
	if err == nil {
		t.Cleanup(func() { conn.Close() })
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		return 0 // no HTTP answer at all
	}
	return resp.StatusCode
}

func carriedAddr(ip string, port int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.ParseIP(ip), Port: port}
}

// Behind an L4 balancer on the port TURN over TLS shares with HTTPS: the PROXY header comes
// before TLS, TURN answers with the carried address and allocates, the hub counts
// signal.max_conns_per_ip per carried address, and a balancer connection without a header
// never gets a handshake. turn.listen takes headers too.
func TestProxyProtocolOnSharedPort(t *testing.T) {
	dir := t.TempDir()
	cert := testcert.New(t)
	certPath, keyPath := cert.Write(t, dir)
	pool := cert.Pool
	shared := freePort(t)
	p := startIcehubOpts(t, opts{signalPort: shared, extra: fmt.Sprintf(`auth.secrets = ["proxy-secret-123"]
turn.allow_peers = ["127.0.0.1/32"]
turn.tls_listen = ["127.0.0.1:%d"]
turn.tls_cert = %q
turn.tls_key = %q
turn.proxy_from = ["127.0.0.1"]
signal.tls_cert = %q
signal.tls_key = %q
signal.proxy_from = ["127.0.0.1/32"]
signal.max_conns_per_ip = 1
`, shared, certPath, keyPath, certPath, keyPath)})
	addr := fmt.Sprintf("127.0.0.1:%d", shared)
	tc := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	cred := mint(t, "proxy-secret-123", "alice", time.Hour)

	// TURN over TLS through the balancer.
	alice := carriedAddr("203.0.113.10", 40000)
	raw, err := viaBalancer(context.Background(), balancerIP, addr, 2, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tconn := tls.Client(raw, tc)
	client, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr,
		Conn: turn.NewSTUNConn(tconn), Username: cred.Username, Password: cred.Password, RTO: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	mapped, err := client.SendBindingRequest()
	if err != nil || mapped.String() != alice.String() {
		t.Fatalf("XOR-MAPPED-ADDRESS on the shared port: %v (%v), want the carried %s", mapped, err, alice)
	}
	relayConn, err := client.Allocate()
	if err != nil {
		t.Fatalf("Allocate through the balancer: %v", err)
	}
	defer relayConn.Close()
	if err := (&relay{client: client, conn: relayConn}).echo(echoPeer(t), []byte("via the balancer")); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "client="+alice.String(), 5*time.Second) // the allocation is logged under alice's address

	// WSS on the same port: one connection per carried address.
	wss := "wss://" + addr + "/ws"
	origin := http.Header{"Origin": {"https://" + addr}}
	if code := wsVia(t, wss, balancerIP, 1, carriedAddr("203.0.113.10", 1), origin, tc); code != 101 {
		t.Fatalf("alice's WebSocket: %d", code)
	}
	if code := wsVia(t, wss, balancerIP, 2, carriedAddr("203.0.113.20", 1), origin, tc); code != 101 {
		t.Fatalf("bob's WebSocket, same balancer: %d", code)
	}
	if code := wsVia(t, wss, balancerIP, 2, carriedAddr("203.0.113.10", 2), origin, tc); code != http.StatusTooManyRequests {
		t.Fatalf("alice's second WebSocket: %d, want 429 (signal.max_conns_per_ip 1)", code)
	}

	// The balancer is in turn.proxy_from: on the shared port it must send the header.
	bare, err := viaBalancer(context.Background(), balancerIP, addr, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	if err := tls.Client(bare, tc).Handshake(); err == nil {
		t.Fatal("TLS handshake from turn.proxy_from without a PROXY header succeeded")
	}
	if v := adminMetric(t, p, `icehub_signal_proxy_header_refused_total{reason="missing"}`); v != 1 {
		t.Fatalf("signal proxy_header_refused_total{missing} = %v, want 1", v)
	}

	// turn.listen (TCP) takes headers from the balancer as well.
	bob := carriedAddr("2001:db8::20", 40001)
	tcpRaw, err := viaBalancer(context.Background(), balancerIP, fmt.Sprintf("127.0.0.1:%d", p.turn), 1, bob)
	if err != nil {
		t.Fatal(err)
	}
	defer tcpRaw.Close()
	tcpClient, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr,
		Conn: turn.NewSTUNConn(tcpRaw), RTO: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := tcpClient.Listen(); err != nil {
		t.Fatal(err)
	}
	defer tcpClient.Close()
	if mapped, err := tcpClient.SendBindingRequest(); err != nil || mapped.String() != bob.String() {
		t.Fatalf("XOR-MAPPED-ADDRESS on turn.listen: %v (%v), want the carried %s", mapped, err, bob)
	}
}

// The hub on its own port behind proxies: a PROXY header (optional from signal.proxy_from)
// or X-Forwarded-For from a listed source names the client for signal.max_conns_per_ip;
// from a stranger both are ignored (a PROXY header there is a malformed request: 400). A
// reload that empties signal.proxy_from makes the balancer a stranger.
func TestProxyProtocolOnHubPort(t *testing.T) {
	p := startIcehub(t, `signal.proxy_from = ["127.0.0.1/32"]
signal.max_conns_per_ip = 1
`)
	ws := fmt.Sprintf("ws://127.0.0.1:%d/ws", p.signal)
	origin := http.Header{"Origin": {fmt.Sprintf("http://127.0.0.1:%d", p.signal)}}
	xff := func(ip string) http.Header {
		h := origin.Clone()
		h.Set("X-Forwarded-For", ip)
		return h
	}
	for i, tc := range []struct {
		name    string
		local   net.IP
		client  *net.TCPAddr
		hdr     http.Header
		want    int
		comment string
	}{
		{"PROXY v1 names alice", balancerIP, carriedAddr("203.0.113.10", 1), origin, 101, ""},
		{"PROXY v2 names bob", balancerIP, carriedAddr("203.0.113.20", 1), origin, 101, ""},
		{"PROXY names alice again", balancerIP, carriedAddr("203.0.113.10", 2), origin, 429, "signal.max_conns_per_ip 1"},
		{"X-Forwarded-For names carol", balancerIP, nil, xff("203.0.113.30"), 101, "an HTTP proxy sends no PROXY header"},
		{"X-Forwarded-For names carol again", balancerIP, nil, xff("203.0.113.30"), 429, ""},
		{"a stranger's PROXY header", strangerIP, carriedAddr("203.0.113.40", 1), origin, 400, "bytes before the request line"},
		{"a stranger's X-Forwarded-For", strangerIP, nil, xff("203.0.113.50"), 101, "counted as 127.0.0.2"},
		{"a stranger claiming another address", strangerIP, nil, xff("203.0.113.60"), 429, "still 127.0.0.2"},
	} {
		version := byte(1 + i%2)
		if code := wsVia(t, ws, tc.local, version, tc.client, tc.hdr, nil); code != tc.want {
			t.Fatalf("%s: HTTP %d, want %d %s", tc.name, code, tc.want, tc.comment)
		}
	}

	// Reload without signal.proxy_from: the balancer's headers are bytes again.
	text, err := os.ReadFile(p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.cfg, []byte(strings.Replace(string(text), `signal.proxy_from = ["127.0.0.1/32"]`, "signal.proxy_from = []", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "reloaded", 5*time.Second)
	if code := wsVia(t, ws, balancerIP, 2, carriedAddr("203.0.113.70", 1), origin, nil); code != 400 {
		t.Fatalf("PROXY header after the balancer was unlisted: HTTP %d, want 400", code)
	}
}
