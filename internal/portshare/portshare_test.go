package portshare

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"icehub/internal/testcert"
	"icehub/turnserver"
)

func newTestPortShare(t *testing.T) (*Splitter, *x509.CertPool) {
	t.Helper()
	cert := testcert.New(t)
	crt, pool := cert.TLS, cert.Pool
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := New(Config{Listener: ln, TLS: &tls.Config{Certificates: []tls.Certificate{crt}}, HandshakeTimeout: 2 * time.Second,
		IsFirst: turnserver.LooksLikeSTUN, PeekLen: turnserver.STUNPeekLen})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	return ps, pool
}

func TestPortShareSplitsSTUNFromHTTP(t *testing.T) {
	ps, pool := newTestPortShare(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "web:"+r.URL.Path)
	})}
	go srv.Serve(ps.Rest())
	t.Cleanup(func() { srv.Close() })

	// A STUN Binding request arrives, byte for byte, on the TURN side.
	got := make(chan []byte, 1)
	go func() {
		c, err := ps.First().Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _ := io.ReadAtLeast(c, buf, 20)
		got <- buf[:n]
	}()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	tc, err := tls.Dial("tcp", ps.Addr().String(), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if _, err := tc.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, req.Raw) {
			t.Fatalf("TURN side got %x, want %x", b, req.Raw)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("STUN stream never reached the TURN listener")
	}

	// HTTPS on the same port reaches the HTTP server.
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + ps.Addr().String() + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "web:/hello" {
		t.Fatalf("HTTPS body %q", body)
	}
}

func TestPortShareDropsSilentAndPlaintextClients(t *testing.T) {
	ps, pool := newTestPortShare(t)
	// A client that connects and says nothing is dropped after the handshake timeout...
	silent, err := net.Dial("tcp", ps.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// ...and plaintext garbage fails the handshake; neither blocks a good client meanwhile.
	junk, err := net.Dial("tcp", ps.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	junk.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	defer junk.Close()

	go func() {
		c, err := ps.Rest().Accept()
		if err == nil {
			c.Write([]byte("x"))
			c.Close()
		}
	}()
	tc, err := tls.Dial("tcp", ps.Addr().String(), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	tc.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	tc.SetReadDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 1)
	if _, err := tc.Read(b); err != nil || b[0] != 'x' {
		t.Fatalf("good client not served while others stall: %v", err)
	}
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(silent); err != nil {
		t.Fatalf("silent client not closed by the server: %v", err)
	}
}
