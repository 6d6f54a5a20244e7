//go:build unix

// Package cdp drives headless Chromium over the Chrome DevTools Protocol, on the pipe
// transport (--remote-debugging-pipe): commands go to the browser's fd 3 and replies come
// from its fd 4, NUL-terminated JSON. Unlike the WebSocket endpoint, a pipe works wherever
// the browser runs — in another network namespace too — and opens no port.
//
// It does what icehub's browser tests need (open pages, inject scripts, evaluate JavaScript,
// collect console output) without a browser-automation library in the module.
package cdp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Flags are the switches every test browser gets: headless, no sandbox (tests run as root),
// nothing that phones home (the machine may have no internet: background fetches would only
// fail, noisily), no QUIC (the servers under test speak HTTP/1.1 and WebSocket over TCP), a
// throwaway profile in userDataDir.
func Flags(userDataDir string) []string {
	return []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
		"--user-data-dir=" + userDataDir,
	}
}

// Browser is one running Chromium.
type Browser struct {
	cmd    *exec.Cmd
	toB    *os.File // our end of the browser's fd 3
	fromB  *os.File // our end of the browser's fd 4
	exited chan struct{}

	wmu     sync.Mutex
	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan reply
	events  map[string]func(method string, params json.RawMessage) // by session id
	stderr  tail
	dead    chan struct{}
}

type reply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Launch starts the browser cmd describes — its Path and Args name Chromium (directly, or
// through a wrapper that execs it, such as `ip netns exec NS chromium`) with its flags — adding
// --remote-debugging-pipe and the two pipe descriptors. Close kills it.
func Launch(cmd *exec.Cmd) (*Browser, error) {
	cmdR, toB, err := os.Pipe() // browser reads commands from fd 3
	if err != nil {
		return nil, err
	}
	fromB, cmdW, err := os.Pipe() // browser writes replies to fd 4
	if err != nil {
		cmdR.Close()
		toB.Close()
		return nil, err
	}
	b := &Browser{
		cmd: cmd, toB: toB, fromB: fromB, exited: make(chan struct{}), dead: make(chan struct{}),
		pending: map[int64]chan reply{}, events: map[string]func(string, json.RawMessage){},
	}
	cmd.Args = append(cmd.Args, "--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{cmdR, cmdW}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true // Close kills the browser with its helper processes
	cmd.Stderr = &b.stderr
	if err := cmd.Start(); err != nil {
		cmdR.Close()
		cmdW.Close()
		toB.Close()
		fromB.Close()
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	cmdR.Close()
	cmdW.Close()
	go func() { _ = cmd.Wait(); close(b.exited) }()
	go b.readLoop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Call(ctx, "", "Browser.getVersion", nil, nil); err != nil {
		b.Close()
		return nil, fmt.Errorf("browser did not answer: %v\n%s", err, b.Stderr())
	}
	return b, nil
}

// Close kills the browser's process group and waits for it.
func (b *Browser) Close() error {
	if b.cmd.Process != nil {
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-b.exited
	b.toB.Close()
	b.fromB.Close()
	return nil
}

// Stderr returns the last lines the browser wrote to stderr, for failure messages.
func (b *Browser) Stderr() string { return b.stderr.String() }

func (b *Browser) readLoop() {
	defer close(b.dead)
	r := bufio.NewReaderSize(b.fromB, 1<<20)
	for {
		data, err := r.ReadBytes(0)
		if err != nil {
			return
		}
		var msg struct {
			ID        int64           `json:"id"`
			Method    string          `json:"method"`
			Params    json.RawMessage `json:"params"`
			SessionID string          `json:"sessionId"`
			reply
		}
		if json.Unmarshal(data[:len(data)-1], &msg) != nil {
			continue
		}
		b.mu.Lock()
		if msg.ID == 0 {
			h := b.events[msg.SessionID]
			b.mu.Unlock()
			if h != nil {
				h(msg.Method, msg.Params)
			}
			continue
		}
		ch := b.pending[msg.ID]
		delete(b.pending, msg.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- msg.reply
		}
	}
}

// Call sends one command (to a page's session when session is not empty) and decodes its
// result into out, if out is not nil.
func (b *Browser) Call(ctx context.Context, session, method string, params, out any) error {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan reply, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	data, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	b.wmu.Lock()
	_, err = b.toB.Write(append(data, 0))
	b.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-b.dead:
		return fmt.Errorf("%s: %w", method, errors.New("browser gone"))
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// tail keeps the last lines written to it.
type tail struct {
	mu    sync.Mutex
	lines []string
	part  string
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.part + string(p)
	parts := strings.Split(s, "\n")
	t.part = parts[len(parts)-1]
	t.lines = append(t.lines, parts[:len(parts)-1]...)
	if len(t.lines) > 40 {
		t.lines = t.lines[len(t.lines)-40:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(append(append([]string{}, t.lines...), t.part), "\n")
}

var _ io.Writer = (*tail)(nil)
