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

// Answers toward an address never exceed what it sent plus the allowance and the refill,
// however the requests and answers are sized and spread over ports; a flood from a few
// ports leaves the allowance to new ports of the same address; another address is
// unaffected.
func TestCreditBoundsAnswersByBytesReceived(t *testing.T) {
	const allowance, refill = 8192, 512 // the defaults
	c := NewCredit(allowance, refill)
	now := time.Unix(1000, 0)
	victim, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	port := func(ip netip.Addr, p int) netip.AddrPort { return netip.AddrPortFrom(ip, uint16(p)) }
	var received, sent int
	newPortsAnswered := 0
	const n, dur = 10000, 10.0 // requests over 10 s
	for i := range n {
		now = now.Add(time.Millisecond)
		req, ans := 28, 80 // a bare Allocate and its 401
		if i%3 == 0 {
			req = 120 // a wrong-credential Allocate
		}
		received += req
		if c.Spend(port(victim, 1000+i%8), now, req, ans) { // the flood: 8 ports
			sent += ans
		}
		if i%500 == 0 { // now and then the victim's own client, from a new port
			received += 44
			if c.Spend(port(victim, 20000+i), now, 44, 80) {
				sent += 80
				newPortsAnswered++
			}
		}
	}
	if bound := EarnRate*float64(received) + allowance + refill*dur; float64(sent) > bound {
		t.Fatalf("sent %d bytes for %d received: over the bound %.0f", sent, received, bound)
	}
	if sent >= received {
		t.Fatalf("sent %d bytes for %d received: a flood that large must get back less than it sent", sent, received)
	}
	if sent < received/2 {
		t.Fatalf("sent only %d of %d received: the credit is not spent", sent, received)
	}
	if newPortsAnswered != n/500 {
		t.Fatalf("the victim's new ports were answered %d times of %d under a flood from 8 ports", newPortsAnswered, n/500)
	}
	if !c.Spend(port(other, 1), now, 20, 40) {
		t.Fatal("an address that sent nothing before is refused its first answer")
	}
	// A port spraying flood drains the allowance; the bound holds.
	received, sent = 0, 0
	for i := range n {
		now = now.Add(time.Millisecond)
		received += 28
		if c.Spend(port(other, 2+i), now, 28, 80) {
			sent += 80
		}
	}
	if bound := float64(received) + allowance + refill*dur; float64(sent) > bound {
		t.Fatalf("spraying: sent %d bytes for %d received: over the bound %.0f", sent, received, bound)
	}
	// A port's retransmissions add up: by its second try a 44-byte request pays an 80-byte
	// answer by itself, however drained the allowance.
	p := port(other, 60000)
	if !c.Spend(p, now, 44, 80) && !c.Spend(p, now, 44, 80) {
		t.Fatal("two tries of a port do not pay its answer")
	}
}
