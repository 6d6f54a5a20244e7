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

	"github.com/pion/stun/v4"
	"golang.org/x/net/ipv4"
)

// bindingResult is one Binding flood.
type bindingResult struct {
	sent, recv uint64
	dur        time.Duration
	cpuPerReq  float64
	genPerReq  float64
}

func (r bindingResult) rate() float64 { return float64(r.recv) / r.dur.Seconds() }

func (r bindingResult) String() string {
	cpu := "n/a"
	if r.cpuPerReq >= 0 {
		cpu = fmt.Sprintf("%.2f µs", r.cpuPerReq)
	}
	return fmt.Sprintf("binding: sent %.0f/s  answered %.0f/s  server cpu/answer %s (generator %.2f µs)",
		float64(r.sent)/r.dur.Seconds(), r.rate(), cpu, r.genPerReq)
}

// bindingFlood keeps up to window requests outstanding on each of k sockets for dur and
// counts answers. A closed loop (send only while under the window) measures what the server
// can answer rather than how fast the kernel drops what it cannot.
func bindingFlood(server *net.UDPAddr, k, window int, dur time.Duration, pid int) (bindingResult, error) {
	tmpl, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		return bindingResult{}, err
	}
	conns := make([]*net.UDPConn, k)
	for i := range conns {
		if conns[i], err = net.DialUDP("udp4", spreadSource(i), server); err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return bindingResult{}, err
		}
		_ = conns[i].SetReadBuffer(4 << 20)
		_ = conns[i].SetWriteBuffer(4 << 20)
	}
	var sent, recv atomic.Uint64
	var stop atomic.Bool
	var wg sync.WaitGroup
	cpu, self := startCPU(pid), startCPU(os.Getpid())
	start := time.Now()
	for i, c := range conns {
		pc := ipv4.NewPacketConn(c)
		wg.Add(1)
		// One goroutine per socket runs the closed loop: top the window up, then block
		// reading answers. No sleeping, no second goroutine to wake per batch.
		go func() {
			defer wg.Done()
			in := make([]ipv4.Message, batch)
			for j := range in {
				in[j].Buffers = [][]byte{make([]byte, 1500)}
			}
			out := make([]ipv4.Message, 32)
			for j := range out {
				out[j].Buffers = [][]byte{append([]byte(nil), tmpl.Raw...)}
			}
			var mine, got, lost uint64
			seq := uint64(i) << 40
			for !stop.Load() {
				for int(mine-got-lost) < window {
					for j := range out {
						seq++
						// A distinct transaction ID per request, as real clients send.
						binary.BigEndian.PutUint64(out[j].Buffers[0][12:20], seq)
					}
					w, err := pc.WriteBatch(out, 0)
					if err != nil || w == 0 {
						break
					}
					mine += uint64(w)
					sent.Add(uint64(w))
				}
				// Whatever is still missing after 50 ms of silence is lost: stop waiting.
				_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				n, err := pc.ReadBatch(in, 0)
				if err != nil {
					lost = mine - got
					continue
				}
				got += uint64(n)
				recv.Add(uint64(n))
			}
		}()
	}
	time.Sleep(dur)
	stop.Store(true)
	res := bindingResult{dur: time.Since(start)}
	res.recv, res.sent = recv.Load(), sent.Load()
	res.cpuPerReq, res.genPerReq = cpu.perUnit(res.recv), self.perUnit(res.recv)
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	return res, nil
}
