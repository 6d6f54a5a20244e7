//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"icehub/config"
)

// cmdCap is the bitrate cap's figure: one allocation, a channel to an in-process peer, and
// datagrams pushed both ways at rates around the cap, each way on its own (the peer does not
// echo, it sends its own stream). It prints what got through against what was offered, for
// icehub with turn.max_bitrate and coturn with the same --max-bps (bytes per second there).
func cmdCap(args []string) error {
	fs := flag.NewFlagSet("cap", flag.ContinueOnError)
	capStr := fs.String("cap", "400k", "the cap, bits per second (turn.max_bitrate syntax)")
	size := fs.Int("size", 1000, "datagram payload bytes")
	warm := fs.Duration("warm", time.Second, "per step, sent before measuring (the cap's burst allowance is spent by then)")
	step := fs.Duration("step", 3*time.Second, "per step, measured")
	coturnBin := fs.String("coturn", "turnserver", "coturn's turnserver (skipped when not found)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	bps, err := config.ParseBitrate(*capStr)
	if err != nil || bps == 0 {
		return fmt.Errorf("-cap: %v", err)
	}
	dir, bin, err := buildInTemp("icehub-bench-cap")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	type server struct {
		name  string
		start func() (*proc, error)
	}
	servers := []server{{"icehub", func() (*proc, error) {
		return startIcehubWith(dir, bin, "max_bitrate = "+strconv.Quote(bps.String())+"\n")
	}}}
	if path, err := exec.LookPath(*coturnBin); err == nil {
		servers = append(servers, server{"coturn", func() (*proc, error) {
			return startCoturnWith(dir, path, "--max-bps="+strconv.FormatUint(uint64(bps)/8, 10))
		}})
	} else {
		fmt.Fprintf(os.Stderr, "  %s not found: icehub only\n", *coturnBin)
	}
	factors := []float64{0.5, 0.9, 1, 1.5, 2, 5}
	rows := make([][]string, len(factors))
	for i, f := range factors {
		rows[i] = []string{fmt.Sprintf("%.0f kbit/s (%.1f×)", f*float64(bps)/1000, f)}
	}
	header := []string{"offered, each way"}
	for _, sv := range servers {
		p, err := sv.start()
		if err != nil {
			return err
		}
		res, err := capSteps(p.turn, uint64(bps), factors, *size, *warm, *step)
		p.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", sv.name, err)
		}
		header = append(header, sv.name+" to peer", sv.name+" to client")
		for i, r := range res {
			rows[i] = append(rows[i], fmtDelivered(r[0], bps), fmtDelivered(r[1], bps))
		}
	}
	fmt.Printf("\nbitrate cap %s bit/s, %d-byte datagrams, %s measured per step after %s: delivered kbit/s (× the cap)\n\n",
		bps, *size, *step, *warm)
	fmt.Println("| " + strings.Join(header, " | ") + " |")
	fmt.Println("|" + strings.Repeat(" --- |", len(header)))
	for _, r := range rows {
		fmt.Println("| " + strings.Join(r, " | ") + " |")
	}
	return nil
}

func fmtDelivered(bitsPerSec float64, cap config.Bitrate) string {
	return fmt.Sprintf("%.0f (%.2f×)", bitsPerSec/1000, bitsPerSec/float64(cap))
}

// startIcehubWith starts icehub with the bench configuration plus turnKeys in [turn].
func startIcehubWith(dir, bin, turnKeys string) (*proc, error) {
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	cfg := dir + "/icehub.toml"
	text := strings.Replace(icehubConfig(ports[0], ports[1], ports[2]), "[turn]\n", "[turn]\n"+turnKeys, 1)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return nil, err
	}
	turn := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ports[0]}
	p, err := start(dir, "icehub", []string{bin, "-config", cfg}, dir, stunReady(turn))
	if err != nil {
		return nil, err
	}
	p.turn = turn
	return p, nil
}

// startCoturnWith starts coturn as compare does, with extra options.
func startCoturnWith(dir, bin string, extra ...string) (*proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	argv := append(coturnArgs(dir, port), extra...)
	argv[0] = bin
	turn := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	p, err := start(dir, "coturn", argv, dir, stunReady(turn))
	if err != nil {
		return nil, err
	}
	p.turn = turn
	return p, nil
}

// capSteps allocates once and, per factor, pushes factor × bps each way; it returns the
// delivered bits per second to the peer and to the client for each step.
func capSteps(server *net.UDPAddr, bps uint64, factors []float64, size int, warm, step time.Duration) ([][2]float64, error) {
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	defer peer.Close()
	_ = peer.SetReadBuffer(4 << 20)
	c, err := dialTURNFrom(nil, server, benchSecret, "cap")
	if err != nil {
		return nil, err
	}
	defer c.close()
	peerAddr := peer.LocalAddr().(*net.UDPAddr)
	if err := c.allocate(); err != nil {
		return nil, err
	}
	if err := c.createPermission(peerAddr); err != nil {
		return nil, err
	}
	if err := c.channelBind(0x4000, peerAddr); err != nil {
		return nil, err
	}
	_ = c.conn.SetReadDeadline(time.Time{})
	var atPeer, atClient atomic.Int64
	go countUDP(peer, &atPeer, func(b []byte) int { return len(b) })
	go countUDP(c.conn, &atClient, func(b []byte) int {
		if _, payload, err := decodeChannelData(b); err == nil {
			return len(payload)
		}
		return 0
	})
	payload := make([]byte, size)
	frame := make([]byte, channelDataLen(size))
	frame = frame[:encodeChannelData(frame, 0x4000, payload)]
	var out [][2]float64
	for _, f := range factors {
		rate := f * float64(bps)
		done := make(chan struct{})
		var measured [2]int64
		go func() {
			time.Sleep(warm)
			measured = [2]int64{atPeer.Load(), atClient.Load()}
			time.Sleep(step)
			measured = [2]int64{atPeer.Load() - measured[0], atClient.Load() - measured[1]}
			close(done)
		}()
		errc := make(chan error, 2)
		go func() {
			errc <- paceUDP(rate, size, warm+step, func() error { _, err := c.conn.Write(frame); return err })
		}()
		go func() {
			errc <- paceUDP(rate, size, warm+step, func() error { _, err := peer.WriteToUDP(payload, c.relay); return err })
		}()
		for range 2 {
			if err := <-errc; err != nil {
				return nil, err
			}
		}
		<-done
		out = append(out, [2]float64{float64(measured[0]) * 8 / step.Seconds(), float64(measured[1]) * 8 / step.Seconds()})
		time.Sleep(time.Second) // the buckets refill before the next step
	}
	return out, nil
}

// paceUDP calls send for size-byte datagrams at rate bits per second for d.
func paceUDP(rate float64, size int, d time.Duration, send func() error) error {
	start := time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	sent := 0
	for {
		el := time.Since(start)
		if el >= d {
			return nil
		}
		for due := int(el.Seconds() * rate / 8); sent+size <= due; sent += size {
			if err := send(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return err
			}
		}
		<-tick.C
	}
}

// countUDP adds what n says each datagram read from conn carries, until conn is closed.
func countUDP(conn *net.UDPConn, total *atomic.Int64, n func([]byte) int) {
	buf := make([]byte, 2048)
	for {
		k, err := conn.Read(buf)
		if err != nil {
			return
		}
		total.Add(int64(n(buf[:k])))
	}
}
