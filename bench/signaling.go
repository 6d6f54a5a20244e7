//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// dialect is the signaling wire protocol under test: the hub's JSON frames, or socket.io v4
// (Engine.IO v4 framing: "0{..}" open, "40" connect, "42[...]" events, "2"/"3" ping/pong),
// spoken here over gorilla/websocket so one Go client drives both servers identically.
type dialect interface {
	path() string
	handshake(c *sigConn, room string) error
	message(dst []byte, room string, t int64, pad []byte) []byte
	// isMessage reports whether a frame is a relayed room message; it may answer pings.
	isMessage(c *sigConn, frame []byte) bool
}

type hubDialect struct{}

func (hubDialect) path() string { return "/ws" }

func (hubDialect) handshake(c *sigConn, room string) error {
	if err := c.expect(`"welcome"`); err != nil {
		return err
	}
	if room == "" {
		return nil
	}
	if err := c.write([]byte(`{"type":"join","room":"` + room + `"}`)); err != nil {
		return err
	}
	return c.expect(`"joined"`)
}

func (hubDialect) message(dst []byte, room string, t int64, pad []byte) []byte {
	dst = append(dst, `{"type":"message","room":"`...)
	dst = append(dst, room...)
	dst = append(dst, `","data":{"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"pad":"`...)
	dst = append(dst, pad...)
	return append(dst, `"}}`...)
}

func (hubDialect) isMessage(_ *sigConn, f []byte) bool {
	return bytes.Contains(f, []byte(`"type":"message"`))
}

type sioDialect struct{}

func (sioDialect) path() string { return "/socket.io/?EIO=4&transport=websocket" }

func (sioDialect) handshake(c *sigConn, room string) error {
	if err := c.expect(`0{`); err != nil { // Engine.IO open
		return err
	}
	if err := c.write([]byte("40")); err != nil { // socket.io connect to "/"
		return err
	}
	if err := c.expect(`40`); err != nil {
		return err
	}
	if room == "" {
		return nil
	}
	if err := c.write([]byte(`42["join","` + room + `"]`)); err != nil {
		return err
	}
	return c.expect(`42["joined"`)
}

func (sioDialect) message(dst []byte, room string, t int64, pad []byte) []byte {
	dst = append(dst, `42["message","`...)
	dst = append(dst, room...)
	dst = append(dst, `",{"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"pad":"`...)
	dst = append(dst, pad...)
	return append(dst, `"}]`...)
}

func (sioDialect) isMessage(c *sigConn, f []byte) bool {
	if len(f) == 1 && f[0] == '2' { // Engine.IO ping from the server
		_ = c.write([]byte("3"))
		return false
	}
	return bytes.HasPrefix(f, []byte(`42["message"`))
}

// sigConn is one WebSocket client; writes are locked because both the kick-off and the
// reader goroutine send.
type sigConn struct {
	ws   *websocket.Conn
	wmu  sync.Mutex
	room string
	peer *sigConn
}

func (c *sigConn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// expect reads frames until one contains want, skipping others (peer-joined, pings), for at
// most 10 frames and 5 seconds.
func (c *sigConn) expect(want string) error {
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.ws.SetReadDeadline(time.Time{})
	for i := 0; i < 10; i++ {
		_, f, err := c.ws.ReadMessage()
		if err != nil {
			return err
		}
		if bytes.Contains(f, []byte(want)) {
			return nil
		}
		if len(f) == 1 && f[0] == '2' {
			_ = c.write([]byte("3"))
		}
	}
	return fmt.Errorf("no %s in 10 frames", want)
}

// dialSig opens one connection from source address 127.0.0.<1+i%ips> so per-IP limits and
// the 28k ephemeral ports of one address are spread.
func dialSig(host string, d dialect, i, ips int) (*sigConn, error) {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%max(ips, 1)))}
	dialer := websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		ReadBufferSize:   2048,
		WriteBufferSize:  2048,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return (&net.Dialer{LocalAddr: src}).DialContext(ctx, network, addr)
		},
	}
	ws, _, err := dialer.Dial("ws://"+host+d.path(), nil)
	if err != nil {
		return nil, err
	}
	return &sigConn{ws: ws}, nil
}

// sigResult is one ping-pong run.
type sigResult struct {
	pairs     int
	msgs      uint64
	dur       time.Duration
	p50, p99  time.Duration
	cpuPerMsg float64
	clientCPU float64 // µs of this client's CPU per message
	rss       int64
}

func (r sigResult) rate() float64 { return float64(r.msgs) / r.dur.Seconds() }

func (r sigResult) String() string {
	return fmt.Sprintf("signaling: %d pairs, %.0f messages/s relayed, latency p50 %s p99 %s, server cpu/message %.1f µs (client %.1f µs), server RSS %.1f MiB",
		r.pairs, r.rate(), fmtMS(r.p50), fmtMS(r.p99), r.cpuPerMsg, r.clientCPU, float64(r.rss)/(1<<20))
}

// pingPong joins pairs rooms of two; in each, window messages bounce between the two
// peers for dur. Latency is one way, from the send time carried in the data. The second peer
// of each room dials host2, so a cluster bench can put the two ends on different nodes.
func pingPong(host, host2 string, d dialect, pairs, size, window int, dur time.Duration, pid int) (sigResult, error) {
	pad := bytes.Repeat([]byte{'x'}, max(size-40, 0)) // "t" and the JSON punctuation take the rest
	base := time.Now()
	var stop atomic.Bool
	var count atomic.Uint64
	var hmu sync.Mutex
	var hist histogram
	conns := make([]*sigConn, 0, 2*pairs)
	defer func() {
		for _, c := range conns {
			c.ws.Close()
		}
	}()
	for p := 0; p < pairs; p++ {
		room := fmt.Sprintf("bench-%d", p)
		var two [2]*sigConn
		for k := range two {
			h := host
			if k == 1 {
				h = host2
			}
			c, err := dialSig(h, d, 2*p+k, 1)
			if err != nil {
				return sigResult{}, fmt.Errorf("connection %d: %w", 2*p+k, err)
			}
			conns = append(conns, c)
			c.room = room
			if err := d.handshake(c, room); err != nil {
				return sigResult{}, fmt.Errorf("connection %d: %w", 2*p+k, err)
			}
			two[k] = c
		}
		two[0].peer, two[1].peer = two[1], two[0]
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local histogram // merged once at the end: no lock per message
			var out []byte
			var rbuf bytes.Buffer // reused: ReadMessage would allocate per frame
			for {
				_, rd, err := c.ws.NextReader()
				if err != nil {
					break
				}
				rbuf.Reset()
				if _, err := rbuf.ReadFrom(rd); err != nil {
					break
				}
				f := rbuf.Bytes()
				if !d.isMessage(c, f) {
					continue
				}
				now := time.Since(base)
				if i := bytes.Index(f, []byte(`"t":`)); i >= 0 {
					j := i + 4
					for j < len(f) && f[j] >= '0' && f[j] <= '9' {
						j++
					}
					if t, err := strconv.ParseInt(string(f[i+4:j]), 10, 64); err == nil {
						local.add(now - time.Duration(t))
					}
				}
				if stop.Load() {
					continue
				}
				count.Add(1)
				out = d.message(out[:0], c.room, int64(time.Since(base)), pad)
				if c.write(out) != nil {
					break
				}
			}
			hmu.Lock()
			hist.merge(&local)
			hmu.Unlock()
		}()
	}
	// Kick off: the first peer of each room sends window messages.
	for i := 0; i < len(conns); i += 2 {
		for w := 0; w < window; w++ {
			_ = conns[i].write(d.message(nil, conns[i].room, int64(time.Since(base)), pad))
		}
	}
	time.Sleep(dur / 10) // warm-up, outside the measurement
	cpu, self := startCPU(pid), startCPU(os.Getpid())
	c0 := count.Load()
	start := time.Now()
	time.Sleep(dur)
	res := sigResult{pairs: pairs, msgs: count.Load() - c0, dur: time.Since(start)}
	res.cpuPerMsg, res.clientCPU = cpu.perUnit(res.msgs), self.perUnit(res.msgs)
	if pid > 0 {
		res.rss, _ = procRSS(pid)
	}
	stop.Store(true)
	time.Sleep(100 * time.Millisecond)
	for _, c := range conns {
		c.ws.Close()
	}
	wg.Wait()
	conns = nil
	res.p50, res.p99 = hist.quantile(0.5), hist.quantile(0.99)
	return res, nil
}

// idleResult is the server's memory with n idle connections.
type idleResult struct {
	n             int
	before, after int64
}

func (r idleResult) perConn() float64 { return float64(r.after-r.before) / float64(max(r.n, 1)) }

func (r idleResult) String() string {
	return fmt.Sprintf("idle: %d connections, server VmRSS %.1f MiB (before %.1f MiB): %.1f KiB per connection",
		r.n, float64(r.after)/(1<<20), float64(r.before)/(1<<20), r.perConn()/1024)
}

// idleConns opens n connections (each through the handshake, no room) and reads the
// server's RSS while they sit idle.
func idleConns(host string, d dialect, n, ips, pid int) (idleResult, error) {
	if pid <= 0 {
		return idleResult{}, errors.New("idle needs the server's -pid")
	}
	res := idleResult{n: n}
	res.before, _ = procRSS(pid)
	conns := make([]*sigConn, n)
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || firstErr.Load() != nil {
					return
				}
				c, err := dialSig(host, d, i, ips)
				if err == nil {
					conns[i] = c
					err = d.handshake(c, "")
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, fmt.Errorf("connection %d: %w", i, err))
				}
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.ws.Close()
			}
		}
	}()
	if err, _ := firstErr.Load().(error); err != nil {
		return res, err
	}
	time.Sleep(2 * time.Second) // let the server's heap settle
	res.after, _ = procRSS(pid)
	return res, nil
}
