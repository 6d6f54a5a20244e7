package turnserver

import (
	"net"
	"net/netip"
	"sync"
)

// connCounter tracks the TCP and TLS client connections of a server: how many each IP holds
// (turn.max_conns_per_ip) and which have an allocation (turn.allocate_timeout).
type connCounter struct {
	mu       sync.Mutex
	perIP    map[netip.Addr]int
	byRemote map[string]*streamConn
}

func newConnCounter() *connCounter {
	return &connCounter{perIP: make(map[netip.Addr]int), byRemote: make(map[string]*streamConn)}
}

// open counts a new connection of c from ip unless ip holds max already (0: no limit).
func (cc *connCounter) open(c *streamConn, ip netip.Addr, max int) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if max > 0 && cc.perIP[ip] >= max {
		return false
	}
	cc.perIP[ip]++
	cc.byRemote[c.RemoteAddr().String()] = c
	return true
}

func (cc *connCounter) close(c *streamConn, ip netip.Addr) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.perIP[ip]--; cc.perIP[ip] <= 0 {
		delete(cc.perIP, ip)
	}
	if cc.byRemote[c.RemoteAddr().String()] == c {
		delete(cc.byRemote, c.RemoteAddr().String())
	}
}

// allocated tells the stream connection at src (if src is one) that it has an allocation,
// whose relay is rec (nil: not known).
func (cc *connCounter) allocated(src net.Addr, rec *relayRecord) {
	if _, ok := src.(*net.TCPAddr); !ok {
		return
	}
	cc.mu.Lock()
	c := cc.byRemote[src.String()]
	cc.mu.Unlock()
	if c != nil {
		c.hasAllocation.Store(true)
		if rec != nil {
			c.rec.Store(rec)
		}
	}
}
