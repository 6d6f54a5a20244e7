package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

func TestPerAddrIsPerAddress(t *testing.T) {
	l := New(1, 3)
	now := time.Unix(1000, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	for i := range 3 {
		if !l.Allow(a, now) {
			t.Fatalf("burst token %d refused", i)
		}
	}
	if l.Allow(a, now) {
		t.Fatal("fourth event in the same instant allowed")
	}
	if !l.Allow(b, now) {
		t.Fatal("another address paid for the first one's burst")
	}
	if !l.Allow(a, now.Add(time.Second)) {
		t.Fatal("no token after a second at 1/s")
	}
	l.SetLimit(0, 0)
	for range 100 {
		if !l.Allow(a, now) {
			t.Fatal("a zero limit must allow everything")
		}
	}
}

func TestPerAddrMemoryBounded(t *testing.T) {
	l := New(10, 10)
	now := time.Unix(1000, 0)
	for i := range MaxTracked + 1000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.Allow(ip, now)
	}
	if n := l.Len(); n > MaxTracked {
		t.Fatalf("%d addresses tracked, bound %d", n, MaxTracked)
	}
}
