package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Issue 11 point 4, HTTP: connections on the signaling listener cannot be held for free.

// A keep-alive connection that stays idle after its request is closed after
// signal.idle_timeout.
func TestHTTPIdleKeepAliveClosed(t *testing.T) {
	p := startIcehub(t, "signal.idle_timeout = \"1s\"\n")
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.signal))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.Close {
		t.Fatal("the server did not keep the connection alive")
	}
	start := time.Now()
	c.SetReadDeadline(start.Add(10 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle keep-alive connection: read %d, %v; want the server to close it", n, err)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 5*time.Second {
		t.Fatalf("closed after %v, idle_timeout is 1s", d)
	}
}

// A request body trickled a byte at a time is cut at signal.read_timeout; WebSockets, whose
// connection outlives any request, are not.
func TestHTTPTrickledBodyCut(t *testing.T) {
	p := startIcehub(t, "signal.read_timeout = \"1s\"\n")
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.signal))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /api/ice-servers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
	if d := closedWithin(t, c, 10*time.Second); d > 5*time.Second {
		t.Fatalf("trickled request cut after %v, read_timeout is 1s", d)
	}

	ws := dialHub(t, p.signal)
	time.Sleep(2 * time.Second) // past read_timeout
	ws.send(map[string]any{"type": "ice-servers"})
	ws.expect("ice-servers")
}
