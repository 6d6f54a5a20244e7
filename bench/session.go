//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
)

// turnClient is one client 5-tuple: a connected UDP socket talking to the server. Its
// request/response methods are synchronous and used only while setting up; the hot paths
// (echo, binding flood) take the socket over afterwards.
type turnClient struct {
	conn  *net.UDPConn
	lt    longTerm
	buf   []byte
	relay *net.UDPAddr
}

// rto is the first retransmission timeout; it doubles per try (RFC 5389 §7.2.1 in spirit,
// shortened because loopback answers in microseconds and a lost answer should cost little).
const (
	rto     = 250 * time.Millisecond
	retries = 3
)

// dialTURNFrom binds the client to local (nil: the kernel picks).
func dialTURNFrom(local, server *net.UDPAddr, secret, user string) (*turnClient, error) {
	conn, err := dialUDP(local, server)
	if err != nil {
		return nil, err
	}
	// Large buffers so a burst at step start is queued, not dropped, on our side.
	_ = conn.SetReadBuffer(1 << 20)
	_ = conn.SetWriteBuffer(1 << 20)
	c := &turnClient{conn: conn, buf: make([]byte, 1500)}
	c.lt.username, c.lt.password = restCredentials(secret, user, time.Now().Add(24*time.Hour))
	return c, nil
}

func (c *turnClient) close() { c.conn.Close() }

var errTimeout = errors.New("no answer")

// roundTrip sends req and returns the answer with its transaction ID, retransmitting on
// silence; anything else that arrives (stale answers, data) is skipped.
func (c *turnClient) roundTrip(req *stun.Message) (*stun.Message, error) {
	wait := rto
	for try := 0; try < retries; try++ {
		if _, err := c.conn.Write(req.Raw); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(wait)
		_ = c.conn.SetReadDeadline(deadline)
		for {
			n, err := c.conn.Read(c.buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				return nil, err
			}
			if !stun.IsMessage(c.buf[:n]) {
				continue
			}
			m := &stun.Message{Raw: append([]byte(nil), c.buf[:n]...)}
			if m.Decode() != nil || m.TransactionID != req.TransactionID {
				continue
			}
			return m, nil
		}
		wait *= 2
	}
	return nil, fmt.Errorf("%v: %w", req.Type, errTimeout)
}

// authed performs an authenticated request: without a nonce it first sends the request
// bare to get the 401 challenge, as a fresh client must; a 438 (stale nonce) is retried once.
func (c *turnClient) authed(method stun.Method, setters ...stun.Setter) (*stun.Message, error) {
	for attempt := 0; attempt < 3; attempt++ {
		var req *stun.Message
		var err error
		if c.lt.nonce == "" {
			req, err = newRequest(method, setters...)
		} else {
			req, err = newRequest(method, c.lt.setters(setters...)...)
		}
		if err != nil {
			return nil, err
		}
		res, err := c.roundTrip(req)
		if err != nil {
			return nil, err
		}
		switch code := errorCode(res); code {
		case 0:
			return res, nil
		case 401, 438:
			if code == 401 && c.lt.nonce != "" && attempt > 0 {
				return nil, fmt.Errorf("%v: 401 with credentials (wrong secret or realm?)", method)
			}
			if err := c.lt.learn(res); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%v: error %d", method, code)
		}
	}
	return nil, fmt.Errorf("%v: still challenged after 3 tries", method)
}

func (c *turnClient) allocate() error {
	res, err := c.authed(stun.MethodAllocate, requestedTransportUDP{}, lifetime(600))
	if err != nil {
		return err
	}
	var relay stun.XORMappedAddress
	if err := relay.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		return fmt.Errorf("allocate: no XOR-RELAYED-ADDRESS: %w", err)
	}
	c.relay = &net.UDPAddr{IP: relay.IP, Port: relay.Port}
	return nil
}

func (c *turnClient) createPermission(peer *net.UDPAddr) error {
	_, err := c.authed(stun.MethodCreatePermission, peerAddress{peer})
	return err
}

func (c *turnClient) channelBind(ch uint16, peer *net.UDPAddr) error {
	_, err := c.authed(stun.MethodChannelBind, channelNumber(ch), peerAddress{peer})
	return err
}

// deallocate is Refresh with LIFETIME 0, which deletes the allocation at once.
func (c *turnClient) deallocate() error {
	_, err := c.authed(stun.MethodRefresh, lifetime(0))
	return err
}

// spreadSource is client i's source address: 127.0.0.2 to 127.0.0.254 in turn. Real
// clients come from many hosts, and both servers spread load over their sockets and threads
// by source address (icehub steers by client IP, coturn's SO_REUSEPORT group hashes the
// 4-tuple), so one source IP for every session would measure a single core.
func spreadSource(i int) *net.UDPAddr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%253))}
}

// dialUDP and sourceFor open client sockets and pick their source addresses: loopback in
// this namespace, except where a mode (xdp) puts the clients in a network namespace.
var (
	dialUDP   = func(local, server *net.UDPAddr) (*net.UDPConn, error) { return net.DialUDP("udp4", local, server) }
	sourceFor = spreadSource
)

// setupResult is what setting up many clients in parallel yields.
type setupResult struct {
	clients  []*turnClient // index i is client i; nil where setup failed
	failed   int
	firstErr error
	elapsed  time.Duration
}

// setupClients runs fn over n fresh clients with up to par in flight. Each client gets its
// own user name so per-user quotas at their defaults never bite.
func setupClients(server *net.UDPAddr, secret string, n, par int, fn func(i int, c *turnClient) error) setupResult {
	res := setupResult{clients: make([]*turnClient, n)}
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < min(par, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := dialTURNFrom(sourceFor(i), server, secret, fmt.Sprintf("bench%d", i))
				if err == nil {
					if err = fn(i, c); err != nil {
						c.close()
					}
				}
				mu.Lock()
				if err != nil {
					res.failed++
					if res.firstErr == nil {
						res.firstErr = err
					}
				} else {
					res.clients[i] = c
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// closeClients closes every client; with dealloc it first frees the allocations so the
// server is left clean for the next test.
func closeClients(cs []*turnClient, dealloc bool) {
	var wg sync.WaitGroup
	ch := make(chan *turnClient)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range ch {
				if dealloc {
					_ = c.deallocate()
				}
				c.close()
			}
		}()
	}
	for _, c := range cs {
		if c != nil {
			ch <- c
		}
	}
	close(ch)
	wg.Wait()
}
