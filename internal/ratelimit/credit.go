package ratelimit

import (
	"net/netip"
	"sync"
	"time"
)

// Credit is a byte budget for answers a server sends without knowing who asked (STUN over
// UDP can be spoofed): whatever arrives "from" an address, the answers sent toward it stay
// within what it sent plus a small allowance, so the server amplifies nothing.
//
// Each source port earns credit with every byte it sends — EarnRate of it — and pays its
// answers from that.
// When a port's own credit falls short (a 20-byte Binding gets a 40-byte answer), it may draw
// the difference from its address's shared allowance (Allowance bytes, Refill per second
// back), but no more than a 32nd of the allowance per DrawWindow. So a flood from a few ports of a
// victim's address pays for itself and leaves the allowance to the victim's own ports, which
// are answered at once; a port that keeps asking is answered as its own bytes allow. The
// bound: answers toward an address ≤ EarnRate × bytes received from it + Allowance +
// Refill × time, which is less than what was received once a flood has brought more than
// (Allowance + Refill × time) / (1 − EarnRate): about 160 KiB with the defaults.
//
// It is safe for concurrent use; memory is bounded by MaxTracked addresses and ports.
type Credit struct {
	mu        sync.Mutex
	allowance float64
	refill    float64
	ports     map[netip.AddrPort]*portCredit
	addrs     map[netip.Addr]*balance
}

// EarnRate is the credit a byte received buys: a little under one, so that a flood that
// pays for its answers itself gets back less than it sent, while a client's second try of a
// 44-byte Allocate still pays the 80-byte 401.
const EarnRate = 0.95

// A source port may draw PortShare of its address's allowance per DrawWindow, and at least
// MinPortDraw (within the allowance): with the default 8 KiB, 256 bytes — a dozen Binding
// answers, or three 401s, every ten seconds. It scales with the allowance, so an operator
// who raises the allowance raises it too.
const (
	PortShare   = 1.0 / 32
	MinPortDraw = 256
	DrawWindow  = 10 * time.Second
)

type portCredit struct {
	earned float64
	drawn  float64 // of the port's share of the allowance, decaying over DrawWindow
	at     time.Time
}

type balance struct {
	bytes float64
	at    time.Time
}

// NewCredit returns a Credit with the given allowance per address (bytes, also the most it
// can bank) and refill (bytes per second).
func NewCredit(allowance, refill float64) *Credit {
	return &Credit{allowance: allowance, refill: refill,
		ports: make(map[netip.AddrPort]*portCredit), addrs: make(map[netip.Addr]*balance)}
}

// SetParams changes the allowance and refill for every address.
func (c *Credit) SetParams(allowance, refill float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.allowance, c.refill = allowance, refill
}

// Spend records that src sent received bytes and, if its credit covers answer bytes, takes
// them and reports true.
func (c *Credit) Spend(src netip.AddrPort, now time.Time, received, answer int) bool {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.ports[src]
	if p == nil {
		if len(c.ports) >= MaxTracked {
			halve(c.ports)
		}
		p = &portCredit{at: now}
		c.ports[src] = p
	}
	// A port banks at most one allowance of its own bytes.
	p.earned = min(p.earned+EarnRate*float64(received), max(c.allowance, float64(answer)))
	if p.earned >= float64(answer) {
		p.earned -= float64(answer)
		return true
	}
	portDraw := min(c.allowance, max(MinPortDraw, c.allowance*PortShare))
	if dt := now.Sub(p.at); dt > 0 {
		p.drawn = max(0, p.drawn-portDraw*dt.Seconds()/DrawWindow.Seconds())
		p.at = now
	}
	need := float64(answer) - p.earned
	if p.drawn+need > portDraw {
		return false
	}
	b := c.addr(src.Addr(), now)
	if b.bytes < need {
		return false
	}
	b.bytes -= need
	p.drawn += need
	p.earned = 0
	return true
}

// addr returns ip's shared allowance, refilled up to now.
func (c *Credit) addr(ip netip.Addr, now time.Time) *balance {
	b := c.addrs[ip]
	if b == nil {
		if len(c.addrs) >= MaxTracked {
			for a, old := range c.addrs { // forget the full ones: a new entry starts full
				if old.bytes+c.refill*now.Sub(old.at).Seconds() >= c.allowance {
					delete(c.addrs, a)
				}
			}
			halve(c.addrs)
		}
		b = &balance{bytes: c.allowance, at: now}
		c.addrs[ip] = b
	}
	if dt := now.Sub(b.at); dt > 0 {
		b.bytes = min(b.bytes+c.refill*dt.Seconds(), c.allowance)
		b.at = now
	}
	return b
}

// halve drops entries until m is under half of MaxTracked: under a flood of distinct
// sources, forgetting some (they start afresh, within the same bound) beats growing.
func halve[K comparable, V any](m map[K]V) {
	for k := range m {
		if len(m) < MaxTracked/2 {
			return
		}
		delete(m, k)
	}
}
