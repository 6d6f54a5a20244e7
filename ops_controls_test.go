package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// turnErrCode is the STUN error code of a pion client's error, 0 when there is none.
func turnErrCode(err error) int {
	var te stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	var tp *stun.TurnError
	if errors.As(err, &tp) {
		return int(tp.ErrorCodeAttr.Code)
	}
	return 0
}

// httpStatus GETs url and returns the status and body.
func httpStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// exitWithin waits for the process to end and fails unless it did within d, with status 0.
func (p *proc) exitWithin(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("exit status %v, want 0", p.err)
		}
	case <-time.After(d):
		t.Fatalf("still running %s later", d)
	}
}

// notifySocket listens where NOTIFY_SOCKET points and collects what is sent to it.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 512)
		for {
			n, err := sock.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return path, msgs
}

// SIGTERM with server.drain_timeout: /readyz goes 503 (/healthz stays up: the node is alive),
// WebSockets close with 1012 "service restart", the allocation made before relays on, a new
// Allocate gets 300 Try Alternate naming the alternate, systemd hears STOPPING, how long to
// wait and a STATUS, and the process exits (status 0) as soon as the last allocation ends.
func TestDrainOnSIGTERMUntilTheLastAllocationEnds(t *testing.T) {
	sock, notes := notifySocket(t)
	p := startIcehubOpts(t, opts{env: []string{"NOTIFY_SOCKET=" + sock}, extra: `auth.secrets = ["drain-test-secret"]
turn.allow_peers = ["127.0.0.1/32"]
turn.alternate_servers = ["192.0.2.30:3478"]
server.drain_timeout = "30s"
`})
	peer := echoPeer(t)
	cr := mint(t, "drain-test-secret", "live", time.Hour)
	live, err := allocate(t, p.turn, cr.Username, cr.Password)
	if err != nil {
		t.Fatal(err)
	}
	if err := live.echo(peer, []byte("before")); err != nil {
		t.Fatal(err)
	}
	ws := dialHub(t, p.signal)
	admin := fmt.Sprintf("http://127.0.0.1:%d", p.admin)
	if code, _ := httpStatus(t, admin+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d before SIGTERM", code)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := ws.closed(5 * time.Second); code != 1012 {
		t.Fatalf("WebSocket closed with %d, want 1012 service restart", code)
	}
	if code, body := httpStatus(t, admin+"/readyz"); code != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("/readyz while draining: %d %q, want 503 draining", code, body)
	}
	if code, _ := httpStatus(t, admin+"/healthz"); code != 200 {
		t.Fatalf("/healthz while draining: %d, want 200 (alive)", code)
	}
	if err := live.echo(peer, []byte("while draining")); err != nil {
		t.Fatalf("the live allocation stopped relaying while draining: %v", err)
	}
	fresh := mint(t, "drain-test-secret", "fresh", time.Hour)
	if _, err := allocate(t, p.turn, fresh.Username, fresh.Password); turnErrCode(err) != 300 {
		t.Fatalf("Allocate while draining: %v, want 300 Try Alternate", err)
	}
	p.waitLog(t, "alternate=192.0.2.30:3478", 5*time.Second)
	if _, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.signal)); err == nil {
		t.Fatal("the hub still accepts connections while draining")
	}
	select {
	case <-p.exited:
		t.Fatal("exited with an allocation still live")
	case <-time.After(500 * time.Millisecond):
	}

	live.conn.Close() // pion deallocates: the last allocation ends
	p.exitWithin(t, 5*time.Second)
	if !strings.Contains(p.Logs(), "drained: no allocation left") {
		t.Fatalf("no drained line:\n%s", p.Logs())
	}
	var got []string
	for len(notes) > 0 {
		got = append(got, <-notes)
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{"READY=1", "STOPPING=1", "EXTEND_TIMEOUT_USEC=40000000", "STATUS=draining: 1 allocations"} {
		if !strings.Contains(all, want) {
			t.Errorf("sd_notify never said %q: %q", want, got)
		}
	}
}

// Without an alternate a draining node answers Allocate 508, and at drain_timeout it stops
// whatever is still live.
func TestDrainOnSIGTERMUntilTheTimeout(t *testing.T) {
	p := startIcehub(t, `auth.secrets = ["drain-test-secret"]
turn.allow_peers = ["127.0.0.1/32"]
server.drain_timeout = "2s"
`)
	cr := mint(t, "drain-test-secret", "held", time.Hour)
	if _, err := allocate(t, p.turn, cr.Username, cr.Password); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLog(t, "draining", 5*time.Second)
	if _, err := allocate(t, p.turn, cr.Username, cr.Password); turnErrCode(err) != 508 {
		t.Fatalf("Allocate while draining without alternates: %v, want 508", err)
	}
	p.exitWithin(t, 10*time.Second)
	if el := time.Since(start); el < 2*time.Second {
		t.Fatalf("stopped after %s, before drain_timeout", el)
	}
	if !strings.Contains(p.Logs(), "drain timeout") {
		t.Fatalf("no drain timeout line:\n%s", p.Logs())
	}
}

// A second SIGTERM ends the drain at once.
func TestSecondSIGTERMEndsTheDrain(t *testing.T) {
	p := startIcehub(t, `auth.secrets = ["drain-test-secret"]
server.drain_timeout = "1h"
`)
	cr := mint(t, "drain-test-secret", "held", time.Hour)
	if _, err := allocate(t, p.turn, cr.Username, cr.Password); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLog(t, "draining", 5*time.Second)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.exitWithin(t, 10*time.Second)
	if !strings.Contains(p.Logs(), "drain cut short") {
		t.Fatalf("no line for the cut:\n%s", p.Logs())
	}
}

// iceServersOf returns the URLs of an iceServers list, and whether any entry has credentials.
func iceServersOf(t *testing.T, raw []byte) (urls []string, creds bool) {
	t.Helper()
	var servers []iceEntry
	if err := json.Unmarshal(raw, &servers); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	for _, s := range servers {
		urls = append(urls, s.URLs...)
		creds = creds || s.Username != ""
	}
	return urls, creds
}

// turn.stun_only: the hub hands out stun: URLs only (welcome, ice-servers, /api/ice-servers),
// /api/turn answers 404, and Allocate with valid credentials gets 403; a reload turns it off
// and on again without a restart.
func TestSTUNOnlyHub(t *testing.T) {
	p := startIcehub(t, "auth.secrets = [\"stun-only-secret\"]\nturn.stun_only = true\n")
	api := fmt.Sprintf("http://127.0.0.1:%d", p.signal)
	stunOnlyNow := func(want bool) {
		t.Helper()
		ws := dialHub(t, p.signal)
		code, body := httpStatus(t, api+"/api/ice-servers")
		var fromAPI struct {
			ICEServers json.RawMessage `json:"iceServers"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &fromAPI) != nil {
			t.Fatalf("/api/ice-servers: %d %s", code, body)
		}
		for what, raw := range map[string][]byte{"welcome": ws.ice, "/api/ice-servers": fromAPI.ICEServers} {
			urls, creds := iceServersOf(t, raw)
			onlySTUN := len(urls) > 0
			for _, u := range urls {
				onlySTUN = onlySTUN && strings.HasPrefix(u, "stun:")
			}
			if onlySTUN != want || creds == want {
				t.Fatalf("stun_only=%v: %s lists %v (credentials: %v)", want, what, urls, creds)
			}
		}
		wantCode := 200
		if want {
			wantCode = 404
		}
		if code, body := httpStatus(t, api+"/api/turn?service=turn"); code != wantCode {
			t.Fatalf("stun_only=%v: /api/turn %d %s, want %d", want, code, body, wantCode)
		}
		cr := mint(t, "stun-only-secret", "someone", time.Hour)
		_, err := allocate(t, p.turn, cr.Username, cr.Password)
		if want && turnErrCode(err) != 403 || !want && err != nil {
			t.Fatalf("stun_only=%v: Allocate: %v", want, err)
		}
	}
	stunOnlyNow(true)
	setKey := func(v string) {
		t.Helper()
		cfg, _ := os.ReadFile(p.cfg)
		text := strings.Replace(string(cfg), "turn.stun_only = "+map[string]string{"true": "false", "false": "true"}[v], "turn.stun_only = "+v, 1)
		if err := os.WriteFile(p.cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		before := strings.Count(p.Logs(), "reloaded")
		p.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(5 * time.Second)
		for strings.Count(p.Logs(), "reloaded") == before {
			if time.Now().After(deadline) {
				t.Fatalf("no reload:\n%s", p.Logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	setKey("false")
	stunOnlyNow(false)
	setKey("true")
	stunOnlyNow(true)
}
