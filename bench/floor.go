//go:build linux

package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"
)

// The floor mode answers "how fast could any Go relay be here": the signaling ping-pong's
// traffic pattern (pairs, one message in flight per pair, each peer answering at once) over
// plain loopback TCP through a relay that only pairs connections and copies bytes — no
// WebSocket framing, no JSON, no rooms. Whatever a real hub does costs on top of this, so
// its messages/s is the ceiling for figure 6 on the machine.

func cmdFloor(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	pairs := fs.Int("pairs", 100, "pairs of clients, one message in flight per pair")
	size := fs.Int("size", 200, "message bytes")
	dur := fs.Duration("duration", 8*time.Second, "run length")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rate, srv, gen, err := runFloor(*pairs, *size, *dur)
	if err != nil {
		return err
	}
	fmt.Printf("floor: %.0f messages/s through a byte-copying Go TCP relay (%d pairs, %d-byte messages); relay cpu/message %.1f µs (generator %.1f µs)\n",
		rate, *pairs, *size, srv, gen)
	return nil
}

// runFloor starts this program's tcprelay mode as the relay process and runs the ping-pong
// through it.
func runFloor(pairs, size int, dur time.Duration) (rate, srvCPU, genCPU float64, err error) {
	relay := exec.Command(os.Args[0], "tcprelay")
	out, err := relay.StdoutPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	relay.Stderr = os.Stderr
	if err := relay.Start(); err != nil {
		return 0, 0, 0, err
	}
	defer func() { _ = relay.Process.Kill(); _ = relay.Wait() }()
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return 0, 0, 0, fmt.Errorf("tcprelay did not start: %w", err)
	}
	return floorPingPong(addr[:len(addr)-1], relay.Process.Pid, pairs, size, dur)
}

// cmdTCPRelay is the floor's relay: every two accepted connections are joined both ways.
func cmdTCPRelay([]string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr())
	var waiting net.Conn
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		if waiting == nil {
			waiting = c
			continue
		}
		a, b := waiting, c
		waiting = nil
		go func() { _, _ = io.Copy(a, b); _ = a.Close() }()
		go func() { _, _ = io.Copy(b, a); _ = b.Close() }()
	}
}

func floorPingPong(addr string, pid, pairs, size int, dur time.Duration) (rate, srvCPU, genCPU float64, err error) {
	type pair struct{ a, b net.Conn }
	ps := make([]pair, pairs)
	for i := range ps {
		// In order, so the relay pairs a with b.
		if ps[i].a, err = net.Dial("tcp", addr); err == nil {
			time.Sleep(time.Millisecond)
			ps[i].b, err = net.Dial("tcp", addr)
			time.Sleep(time.Millisecond)
		}
		if err != nil {
			return 0, 0, 0, err
		}
	}
	var n atomic.Uint64
	var wg sync.WaitGroup
	stop := time.Now().Add(dur)
	cpu, self := startCPU(pid), startCPU(os.Getpid())
	start := time.Now()
	for _, p := range ps {
		wg.Add(2)
		go func() { // a sends and waits for b's answer
			defer wg.Done()
			defer p.a.Close()
			defer p.b.Close()
			msg, buf := make([]byte, size), make([]byte, size)
			for time.Now().Before(stop) {
				if _, err := p.a.Write(msg); err != nil {
					return
				}
				if _, err := io.ReadFull(p.a, buf); err != nil {
					return
				}
				n.Add(2)
			}
		}()
		go func() { // b answers what it receives
			defer wg.Done()
			buf := make([]byte, size)
			for {
				if _, err := io.ReadFull(p.b, buf); err != nil {
					return
				}
				if _, err := p.b.Write(buf); err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	return float64(n.Load()) / el.Seconds(), cpu.perUnit(n.Load()), self.perUnit(n.Load()), nil
}
