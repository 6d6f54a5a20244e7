package testcert

import (
	"crypto/tls"
	"testing"
)

// A client trusting Pool completes a handshake with a server using the certificate loaded
// back from the files Write made; a second certificate is a different one.
func TestHandshakeWithWrittenCert(t *testing.T) {
	c := New(t)
	certPath, keyPath := c.Write(t, t.TempDir())
	loaded, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{loaded}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			s, err := ln.Accept()
			if err != nil {
				return
			}
			_ = s.(*tls.Conn).Handshake()
			s.Close()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: c.Pool})
	if err != nil {
		t.Fatalf("handshake with the written certificate: %v", err)
	}
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(c.Serial()) != 0 {
		t.Fatalf("server presented serial %v, want %v", got, c.Serial())
	}
	conn.Close()
	if New(t).Serial().Cmp(c.Serial()) == 0 {
		t.Fatal("two certificates share a serial")
	}
	if _, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: New(t, "::1").Pool}); err == nil {
		t.Fatal("a pool for another certificate trusted this one")
	}
	if New(t, "203.0.113.3", "2001:db8::1").TLS.Leaf.IPAddresses[1].String() != "2001:db8::1" {
		t.Fatal("the addresses asked for are not in the certificate")
	}
}
