package turnserver

import (
	"net/netip"
	"testing"
	"time"
)

// A nonce is valid for the address it was minted for, within its lifetime, and for nothing
// else; a forged or truncated one is refused.
func TestSourceNonces(t *testing.T) {
	n := newSourceNonces()
	now := time.Unix(1_800_000_000, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	na := n.mint(a, now)
	if !n.valid([]byte(na), a, now) || !n.valid([]byte(na), a, now.Add(nonceLifetime-time.Minute)) {
		t.Fatal("a fresh nonce is refused for its own address")
	}
	if n.valid([]byte(na), b, now) {
		t.Fatal("a nonce minted for one address is valid for another")
	}
	if n.valid([]byte(na), a, now.Add(nonceLifetime+2*time.Minute)) {
		t.Fatal("an expired nonce is valid")
	}
	if n.valid([]byte(na), a, now.Add(-2*time.Minute)) {
		t.Fatal("a nonce from the future is valid")
	}
	forged := []byte(na)
	forged[len(forged)-1] ^= 1
	if n.valid(forged, a, now) || n.valid([]byte(na[:len(na)-1]), a, now) || n.valid(nil, a, now) {
		t.Fatal("a forged or truncated nonce is valid")
	}
	if other := newSourceNonces(); other.valid([]byte(na), a, now) {
		t.Fatal("another process's key accepts this one's nonce")
	}
	if v4 := n.mint(netip.MustParseAddr("::ffff:192.0.2.1"), now); !n.valid([]byte(v4), a, now) {
		t.Fatal("the 4-in-6 form of an address is another address")
	}
}

func BenchmarkNonceValid(b *testing.B) {
	n := newSourceNonces()
	now := time.Now()
	ip := netip.MustParseAddr("192.0.2.1")
	nonce := []byte(n.mint(ip, now))
	b.ReportAllocs()
	for b.Loop() {
		n.valid(nonce, ip, now)
	}
}
