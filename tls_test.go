package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"icehub/internal/testcert"
	"icehub/internal/testenv"

	"github.com/gorilla/websocket"
	"github.com/pion/turn/v5"
)

// TestCoturnClientsAgainstBinary runs coturn's own test clients against the built binary:
// the mapped address, relaying to an echo peer over UDP, TCP and TLS, client to client under
// the default filter, and the echo peer unreachable without allow_peers.
func TestCoturnClientsAgainstBinary(t *testing.T) {
	certPath, keyPath := testcert.New(t).Write(t, t.TempDir())
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
	cert := testcert.New(t)
	certPath, keyPath := cert.Write(t, dir)
	pool := cert.Pool
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
	next := testcert.New(t)
	next.Write(t, dir)
	p2.cmd.Process.Signal(syscall.SIGHUP)
	p2.waitLog(t, "reloaded", 5*time.Second)
	c2, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got := c2.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(next.Serial()) != 0 {
		t.Fatalf("serial %v after reload, want the new certificate's %v", got, next.Serial())
	}
	// The allocation made before the reload still relays.
	if err := (&relay{client: client, conn: relayConn}).echo(echoPeer(t), []byte("after reload")); err != nil {
		t.Fatal(err)
	}
}
