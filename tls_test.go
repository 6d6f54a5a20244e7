package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"icehub/internal/testenv"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/turn/v5"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with the given serial and returns
// the cert and key paths and a pool that trusts it.
func writeCert(t *testing.T, dir string, serial int64) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "icehub test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	leaf, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(leaf)
	return certPath, keyPath, pool
}

// TestCoturnClientsAgainstBinary runs coturn's own test clients against the built binary:
// the mapped address, relaying to an echo peer over UDP, TCP and TLS, client to client under
// the default filter, and the echo peer unreachable without allow_peers.
func TestCoturnClientsAgainstBinary(t *testing.T) {
	certPath, keyPath, _ := writeCert(t, t.TempDir(), 1)
	tlsPort := freePort(t)
	tlsConf := fmt.Sprintf("turn.tls_listen = [\"127.0.0.1:%d\"]\nturn.tls_cert = %q\nturn.tls_key = %q\n", tlsPort, certPath, keyPath)
	open := startIcehub(t, "auth.secrets = [\"uclient-binary-secret\"]\nturn.allow_peers = [\"127.0.0.1/32\"]\n"+tlsConf)
	closed := startIcehub(t, "auth.secrets = [\"uclient-binary-secret\"]\n") // default peer filter
	peer := strconv.Itoa(startUDPEchoTool(t))

	stunclient := testenv.Tool(t, "turnutils_stunclient", "coturn")
	out, err := exec.Command(stunclient, "-p", strconv.Itoa(open.turn), "127.0.0.1").CombinedOutput()
	if err != nil || !regexp.MustCompile(`reflexive addr: 127\.0\.0\.1:\d+`).Match(out) {
		t.Fatalf("turnutils_stunclient: %v\n%s", err, out)
	}

	base := []string{"-W", "uclient-binary-secret", "-u", "alice", "-n", "20", "-m", "2", "-l", "120"}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"udp to echo peer", []string{"-e", "127.0.0.1", "-r", peer, "-p", strconv.Itoa(open.turn)}},
		{"tcp to echo peer", []string{"-t", "-e", "127.0.0.1", "-r", peer, "-p", strconv.Itoa(open.turn)}},
		{"tls to echo peer", []string{"-t", "-S", "-e", "127.0.0.1", "-r", peer, "-p", strconv.Itoa(tlsPort)}},
		{"client to client, default filter", []string{"-y", "-p", strconv.Itoa(closed.turn)}},
		{"client to client over tcp, default filter", []string{"-y", "-t", "-p", strconv.Itoa(closed.turn)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := runUclient(t, append(append(append([]string{}, base...), c.args...), "127.0.0.1")...)
			if err != nil {
				t.Fatalf("turnutils_uclient: %v\n%s", err, out)
			}
			if !uclientNoLoss(out) {
				t.Fatalf("loss or no summary:\n%s", out)
			}
		})
	}
	t.Run("echo peer refused by default", func(t *testing.T) {
		out, _ := runUclient(t, append(append([]string{}, base...), "-n", "5", "-m", "1", "-e", "127.0.0.1", "-r", peer,
			"-p", strconv.Itoa(closed.turn), "127.0.0.1")...)
		all := uclientTotals.FindAllStringSubmatch(out, -1)
		if len(all) == 0 {
			t.Fatalf("no summary:\n%s", out)
		}
		if last := all[len(all)-1]; last[1] == "0" || last[2] != "0" {
			t.Fatalf("sent %s, received %s: the loopback echo peer must be unreachable:\n%s", last[1], last[2], out)
		}
	})
}

func TestTURNAndHTTPSShareOnePort(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath, pool := writeCert(t, dir, 1)
	shared := freePort(t)
	p2 := startIcehubOpts(t, opts{signalPort: shared, extra: fmt.Sprintf(`auth.secrets = ["shared-port-secret"]
turn.allow_peers = ["127.0.0.1/32"]
turn.tls_listen = ["127.0.0.1:%d"]
turn.tls_cert = %q
turn.tls_key = %q
signal.tls_cert = %q
signal.tls_key = %q
`, shared, certPath, keyPath, certPath, keyPath)})
	addr := fmt.Sprintf("127.0.0.1:%d", shared)
	tlsConf := &tls.Config{RootCAs: pool}

	// TURN over TLS on the shared port.
	tc, err := tls.Dial("tcp", addr, tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	cred := mint(t, "shared-port-secret", "bob", time.Hour)
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr, Conn: turn.NewSTUNConn(tc),
		Username: cred.Username, Password: cred.Password,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	relayConn, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate over TLS on the shared port: %v", err)
	}
	defer relayConn.Close()
	if err := (&relay{client: client, conn: relayConn}).echo(echoPeer(t), []byte("over 443")); err != nil {
		t.Fatal(err)
	}

	// HTTPS and WSS on the same port, at the same time.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	resp, err := hc.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz %d %s", resp.StatusCode, body)
	}
	d := websocket.Dialer{TLSClientConfig: tlsConf, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial("wss://"+addr+"/ws", http.Header{"Origin": {"https://" + addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var m map[string]any
	ws.ReadJSON(&m)
	if m["type"] != "welcome" {
		t.Fatalf("first frame %v", m)
	}
	ws.WriteJSON(map[string]any{"type": "join", "room": "port-443"})
	ws.ReadJSON(&m)
	if m["type"] != "joined" {
		t.Fatalf("join over wss: %v", m)
	}

	// Certificates are re-read on SIGHUP: a new handshake presents the new one.
	writeCert(t, dir, 2)
	p2.cmd.Process.Signal(syscall.SIGHUP)
	p2.waitLog(t, "reloaded", 5*time.Second)
	c2, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got := c2.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 2 {
		t.Fatalf("serial %d after reload, want 2", got)
	}
	// The allocation made before the reload still relays.
	if err := (&relay{client: client, conn: relayConn}).echo(echoPeer(t), []byte("after reload")); err != nil {
		t.Fatal(err)
	}
}

// startUDPEchoTool runs coturn's turnutils_peer as the echo peer and returns its port.
func startUDPEchoTool(t *testing.T) int {
	t.Helper()
	path := testenv.Tool(t, "turnutils_peer", "coturn")
	port := freePort(t)
	cmd := exec.Command(path, "-p", strconv.Itoa(port), "-L", "127.0.0.1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer c.Close()
	buf := make([]byte, 16)
	for range 100 {
		c.WriteTo([]byte("ping"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := c.ReadFrom(buf); err == nil {
			return port
		}
	}
	t.Fatal("turnutils_peer does not echo")
	return 0
}

func runUclient(t *testing.T, args ...string) (string, error) {
	t.Helper()
	path := testenv.Tool(t, "turnutils_uclient", "coturn")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	return string(out), err
}

var uclientTotals = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)

// uclientNoLoss reports whether uclient's last summary shows everything sent came back.
func uclientNoLoss(out string) bool {
	all := uclientTotals.FindAllStringSubmatch(out, -1)
	if len(all) == 0 {
		return false
	}
	last := all[len(all)-1]
	return last[1] != "0" && last[1] == last[2] && strings.Contains(out, "Total lost packets 0 (0.000000%)")
}
