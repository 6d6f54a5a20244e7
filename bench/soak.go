//go:build linux

package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// soakSample is the server's footprint at one moment.
type soakSample struct {
	rss        int64
	heap       int64 // live Go heap after a forced collection
	goroutines int
	fds        int
}

func (s soakSample) String() string {
	return fmt.Sprintf("RSS %.1f MiB, live heap %.1f MiB, %d goroutines, %d open fds",
		float64(s.rss)/(1<<20), float64(s.heap)/(1<<20), s.goroutines, s.fds)
}

func sampleServer(pid, admin int) (soakSample, error) {
	var s soakSample
	var err error
	if s.rss, err = procRSS(pid); err != nil {
		return s, err
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(ents)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	// The heap profile endpoint collects first (gc=1), so the heap figure below is live data,
	// not garbage waiting for the next cycle: RSS alone lags behind the scavenger.
	if resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", admin)); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", admin))
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			s.goroutines = int(f)
		}
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			s.heap = int64(f)
		}
	}
	return s, nil
}

// cmdSoak builds and starts icehub, churns TURN allocations and WebSocket peers against it
// for -duration, and reports RSS, goroutines and open descriptors at start and end: after the
// churn stops and a settle wait they must be back at baseline.
func cmdSoak(args []string) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	dur := fs.Duration("duration", 5*time.Minute, "how long to churn")
	workers := fs.Int("workers", 8, "TURN workers (allocate, permission, channel, deallocate in a loop)")
	wsWorkers := fs.Int("ws", 8, "WebSocket workers (connect, join, message, close in a loop)")
	settle := fs.Duration("settle", 20*time.Second, "wait after the churn before the final sample")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, bin, err := buildInTemp("icehub-soak")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := startIcehub(dir, bin)
	if err != nil {
		return err
	}
	defer p.stop()
	_, port, _ := net.SplitHostPort(p.admin)
	admin, err := strconv.Atoi(port)
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	start, err := sampleServer(p.pid(), admin)
	if err != nil {
		return err
	}
	fmt.Printf("soak: start  %v\n", start)

	var allocs, wsRounds, errs atomic.Int64
	stop := time.Now().Add(*dur)
	var wg sync.WaitGroup
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				c, err := dialTURNFrom(nil, p.turn, benchSecret, fmt.Sprintf("soak%d", w))
				if err != nil {
					errs.Add(1)
					continue
				}
				err = c.allocate()
				if err == nil {
					peer := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.relay.Port}
					_ = c.createPermission(peer)
					_ = c.channelBind(0x4000, peer)
					err = c.deallocate()
				}
				c.close()
				if err != nil {
					errs.Add(1)
				} else {
					allocs.Add(1)
				}
			}
		}()
	}
	for w := range *wsWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
			for i := 0; time.Now().Before(stop); i++ {
				ws, _, err := d.Dial("ws://"+p.http+"/ws", nil)
				if err != nil {
					errs.Add(1)
					time.Sleep(100 * time.Millisecond)
					continue
				}
				room := fmt.Sprintf("soak-%d-%d", w, i%4)
				_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"`+room+`"}`))
				_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"message","room":"`+room+`","data":"x"}`))
				_ = ws.SetReadDeadline(time.Now().Add(2 * time.Second))
				for k := 0; k < 2; k++ { // welcome, joined
					if _, _, err := ws.ReadMessage(); err != nil {
						break
					}
				}
				ws.Close()
				wsRounds.Add(1)
			}
		}()
	}
	tick := time.NewTicker(30 * time.Second)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-tick.C:
			if s, err := sampleServer(p.pid(), admin); err == nil {
				fmt.Printf("soak: %s  %v  (allocations %d, ws rounds %d, errors %d)\n",
					time.Now().Format("15:04:05"), s, allocs.Load(), wsRounds.Load(), errs.Load())
			}
		}
	}
	tick.Stop()
	time.Sleep(*settle)
	end, err := sampleServer(p.pid(), admin)
	if err != nil {
		return err
	}
	fmt.Printf("soak: end    %v  (allocations %d, ws rounds %d, errors %d)\n", end, allocs.Load(), wsRounds.Load(), errs.Load())
	var bad []string
	if end.goroutines > start.goroutines+10 {
		bad = append(bad, fmt.Sprintf("goroutines %d -> %d", start.goroutines, end.goroutines))
	}
	if end.fds > start.fds+5 {
		bad = append(bad, fmt.Sprintf("fds %d -> %d", start.fds, end.fds))
	}
	// The live heap is the leak signal; RSS is reported, as the runtime returns freed pages
	// to the OS only gradually.
	if end.heap > 2*start.heap+8<<20 {
		bad = append(bad, fmt.Sprintf("live heap %d -> %d", start.heap, end.heap))
	}
	if len(bad) > 0 {
		return fmt.Errorf("not back to baseline: %s", strings.Join(bad, "; "))
	}
	fmt.Println("soak: back to baseline")
	return nil
}
