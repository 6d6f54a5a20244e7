// Package testcert makes throwaway self-signed TLS certificates for tests: one key pair, a
// pool that trusts it, and PEM files for servers that read them from disk.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Cert is a self-signed server certificate valid from an hour ago for a day.
type Cert struct {
	TLS  tls.Certificate // with Leaf set
	Pool *x509.CertPool  // trusts exactly this certificate
	key  *ecdsa.PrivateKey
}

// New makes a certificate for ips (127.0.0.1 when none is given), with a random serial so
// that two certificates are told apart (a reload test checks which one a server presents).
func New(t testing.TB, ips ...string) *Cert {
	t.Helper()
	if len(ips) == 0 {
		ips = []string{"127.0.0.1"}
	}
	var addrs []net.IP
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			t.Fatalf("testcert: %q is not an IP address", s)
		}
		addrs = append(addrs, ip)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: "icehub test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  addrs,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &Cert{TLS: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, Pool: pool, key: key}
}

// Serial is the certificate's serial number.
func (c *Cert) Serial() *big.Int { return c.TLS.Leaf.SerialNumber }

// ServerConfig is a TLS server configuration presenting the certificate.
func (c *Cert) ServerConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.TLS}}
}

// Write stores the certificate and its key as cert.pem and key.pem in dir, replacing what
// is there, and returns their paths.
func (c *Cert) Write(t testing.TB, dir string) (certPath, keyPath string) {
	t.Helper()
	kb, err := x509.MarshalECPrivateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, b := range map[string]*pem.Block{
		certPath: {Type: "CERTIFICATE", Bytes: c.TLS.Certificate[0]},
		keyPath:  {Type: "EC PRIVATE KEY", Bytes: kb},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certPath, keyPath
}
