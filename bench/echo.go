//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
)

// batch is how many datagrams one recvmmsg/sendmmsg moves at most.
const batch = 64

// echoPeer is the in-process UDP peer behind the relay: one socket, one goroutine, and
// batched reads and writes, so it costs a fraction of what the server under test spends.
type echoPeer struct {
	conn *net.UDPConn
	addr *net.UDPAddr
	recv atomic.Uint64
	done chan struct{}
}

// listenEchoPeer opens the echo peer's socket: on loopback, except where a mode (xdp)
// places the peer in a network namespace.
var listenEchoPeer = func() (*net.UDPConn, error) {
	return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
}

func startEchoPeer() (*echoPeer, error) {
	conn, err := listenEchoPeer()
	if err != nil {
		return nil, err
	}
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	p := &echoPeer{conn: conn, addr: conn.LocalAddr().(*net.UDPAddr), done: make(chan struct{})}
	go p.run()
	return p, nil
}

func (p *echoPeer) run() {
	defer close(p.done)
	pc := ipv4.NewPacketConn(p.conn)
	in := make([]ipv4.Message, batch)
	out := make([]ipv4.Message, batch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, 2048)}
		out[i].Buffers = make([][]byte, 1)
	}
	for {
		n, err := pc.ReadBatch(in, 0)
		if err != nil {
			return // closed
		}
		for i := 0; i < n; i++ {
			out[i].Buffers[0] = in[i].Buffers[0][:in[i].N]
			out[i].Addr = in[i].Addr
		}
		p.recv.Add(uint64(n))
		for off := 0; off < n; {
			w, err := pc.WriteBatch(out[off:n], 0)
			if err != nil {
				break // full socket buffer: the packet is lost, which loss figures show
			}
			off += w
		}
	}
}

func (p *echoPeer) close() { p.conn.Close(); <-p.done }

// Payload layout: send time (ns since run start), step number, sequence. The step number
// lets a step ignore late packets of the previous one.
const payloadHeader = 16

// echoSession is one allocation with a channel bound to the echo peer. Only the sender
// touches it.
type echoSession struct {
	c     *turnClient
	fd    int
	pc    *ipv4.PacketConn
	ch    uint16
	out   []ipv4.Message
	paced uint64 // packets due so far, sent or dropped by our own socket
	sent  uint64 // packets the kernel took
}

// echoRun holds a set of sessions ready to carry traffic at different rates in turn.
type echoRun struct {
	peer     *echoPeer
	sessions []*echoSession
	base     time.Time
	step     atomic.Uint32
	size     int
	tick     time.Duration
	setup    setupResult
	direct   bool
	poll     *poller
	stop     atomic.Bool
	rxDone   chan struct{}

	mu   sync.Mutex // guards what the receive loop counts
	hist histogram
	recv uint64
}

// stepResult is one measured window.
type stepResult struct {
	offered, sent, recv uint64
	dur                 time.Duration
	p50, p99            time.Duration
	cpuPerPkt           float64 // µs of server CPU per relayed packet, -1 unknown
	genPerPkt           float64 // µs of this generator's CPU per relayed packet
}

func (r stepResult) delivered() float64 {
	if r.sent == 0 {
		return 0
	}
	return float64(r.recv) / float64(r.sent)
}

func (r stepResult) String() string {
	cpu := "n/a"
	if r.cpuPerPkt >= 0 {
		cpu = fmt.Sprintf("%.2f µs", r.cpuPerPkt)
	}
	return fmt.Sprintf("offered %6d pps  sent %6.0f pps  echoed %6.0f pps  delivered %6.2f %%  rtt p50 %s p99 %s  server cpu/relayed pkt %s (generator %.2f µs)",
		r.offered, float64(r.sent)/r.dur.Seconds(), float64(r.recv)/r.dur.Seconds(), 100*r.delivered(), fmtMS(r.p50), fmtMS(r.p99), cpu, r.genPerPkt)
}

// newEchoRun allocates n sessions, each with a permission and channel 0x4000 to the echo
// peer. With direct, sessions send straight to the peer: the generator's own ceiling.
func newEchoRun(server *net.UDPAddr, secret string, n, size int, tick time.Duration, direct bool) (*echoRun, error) {
	if size < payloadHeader {
		size = payloadHeader
	}
	peer, err := startEchoPeer()
	if err != nil {
		return nil, err
	}
	r := &echoRun{peer: peer, base: time.Now(), size: size, tick: tick, direct: direct}
	target := server
	if direct {
		target = peer.addr
	}
	r.setup = setupClients(target, secret, n, 32, func(_ int, c *turnClient) error {
		if direct {
			return nil
		}
		if err := c.allocate(); err != nil {
			return err
		}
		if err := c.createPermission(peer.addr); err != nil {
			return err
		}
		return c.channelBind(0x4000, peer.addr)
	})
	if r.setup.failed > 0 {
		closeClients(r.setup.clients, false)
		peer.close()
		return nil, fmt.Errorf("%d of %d sessions failed to set up: %v", r.setup.failed, n, r.setup.firstErr)
	}
	if r.poll, err = newPoller(); err != nil {
		closeClients(r.setup.clients, false)
		peer.close()
		return nil, err
	}
	for i, c := range r.setup.clients {
		_ = c.conn.SetReadDeadline(time.Time{})
		s := &echoSession{c: c, pc: ipv4.NewPacketConn(c.conn), ch: 0x4000, out: make([]ipv4.Message, batch)}
		if s.fd, err = rawFD(c.conn); err == nil {
			err = r.poll.add(s.fd, i)
		}
		if err != nil {
			r.poll.close()
			closeClients(r.setup.clients, false)
			peer.close()
			return nil, err
		}
		frame := channelDataLen(size)
		if direct {
			frame = size
		}
		for i := range s.out {
			s.out[i].Buffers = [][]byte{make([]byte, frame)}
		}
		r.sessions = append(r.sessions, s)
	}
	r.rxDone = make(chan struct{})
	go r.receive()
	return r, nil
}

// receive is the one goroutine reading every session: epoll, then one recvmmsg per ready
// socket, then one lock to count the whole round.
func (r *echoRun) receive() {
	defer close(r.rxDone)
	rx := newRxBatch(batch, 2048)
	var ready []int
	for !r.stop.Load() {
		ready = r.poll.wait(100*time.Millisecond, ready)
		if len(ready) == 0 {
			continue
		}
		now := time.Since(r.base)
		step := r.step.Load()
		r.mu.Lock()
		for _, idx := range ready {
			n := rx.recv(r.sessions[idx].fd)
			for i := 0; i < n; i++ {
				b := rx.packet(i)
				if !r.direct {
					var err error
					if _, b, err = decodeChannelData(b); err != nil {
						continue // a stray STUN answer
					}
				}
				if len(b) < payloadHeader || binary.BigEndian.Uint32(b[8:12]) != step {
					continue
				}
				sent := time.Duration(binary.BigEndian.Uint64(b[0:8]))
				r.hist.add(now - sent)
				r.recv++
			}
		}
		r.mu.Unlock()
	}
}

// runStep offers total packets/s, spread evenly over the sessions, for dur; then waits
// drain for stragglers and reports. Packets later than drain count as lost.
func (r *echoRun) runStep(total int, dur, drain time.Duration, pid int) stepResult {
	step := r.step.Add(1)
	for _, s := range r.sessions {
		s.sent, s.paced = 0, 0
	}
	r.mu.Lock()
	r.hist.reset()
	r.recv = 0
	r.mu.Unlock()
	peerStart := r.peer.recv.Load()
	cpu, self := startCPU(pid), startCPU(os.Getpid())
	perSession := float64(total) / float64(len(r.sessions))
	payload := make([]byte, r.size)
	binary.BigEndian.PutUint32(payload[8:12], step)
	start := time.Now()
	ticker := time.NewTicker(r.tick)
	for {
		el := time.Since(start)
		if el >= dur {
			break
		}
		for i, s := range r.sessions {
			// The phase offset staggers sessions so they do not all fire on one tick edge.
			due := uint64(perSession*el.Seconds() + float64(i)/float64(len(r.sessions)))
			k := int(min(due-min(due, s.paced), batch))
			if k == 0 {
				continue
			}
			ts := uint64(time.Since(r.base))
			for j := 0; j < k; j++ {
				binary.BigEndian.PutUint64(payload[0:8], ts)
				binary.BigEndian.PutUint32(payload[12:16], uint32(s.paced)+uint32(j))
				buf := s.out[j].Buffers[0]
				if r.direct {
					copy(buf, payload)
				} else {
					s.out[j].Buffers[0] = buf[:encodeChannelData(buf[:cap(buf)], s.ch, payload)]
				}
			}
			// A full send buffer drops the rest; they are not made up later, and they do not
			// count as sent, so our own drops never show as the server's loss.
			w, _ := s.pc.WriteBatch(s.out[:k], 0)
			s.sent += uint64(max(w, 0))
			s.paced = due
		}
		<-ticker.C
	}
	ticker.Stop()
	elapsed := time.Since(start)
	time.Sleep(drain)
	res := stepResult{offered: uint64(total), dur: elapsed}
	for _, s := range r.sessions {
		res.sent += s.sent
	}
	r.mu.Lock()
	r.step.Add(1) // from here on, stragglers are ignored
	res.recv = r.recv
	res.p50, res.p99 = r.hist.quantile(0.50), r.hist.quantile(0.99)
	r.mu.Unlock()
	relayed := r.peer.recv.Load() - peerStart + res.recv
	res.cpuPerPkt, res.genPerPkt = cpu.perUnit(relayed), self.perUnit(relayed)
	return res
}

// close stops the readers and, when dealloc is set, frees the allocations.
func (r *echoRun) close(dealloc bool) {
	r.stop.Store(true)
	<-r.rxDone
	r.poll.close()
	closeClients(r.setup.clients, dealloc && !r.direct)
	r.peer.close()
}
