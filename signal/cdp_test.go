package signal

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A minimal Chrome DevTools Protocol client: enough to open pages and evaluate JavaScript in
// them, without pulling a browser-automation library into the module.

const chromiumPath = "/usr/bin/chromium"

type browser struct {
	t    *testing.T
	conn *websocket.Conn

	wmu     sync.Mutex
	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan cdpReply
	dead    chan struct{}
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

var devtoolsRe = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// launchBrowser starts headless Chromium with a fresh profile and connects to it. The
// process group is killed when the test ends.
func launchBrowser(t *testing.T, extra ...string) *browser {
	t.Helper()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run",
		"--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
		"--user-data-dir=" + t.TempDir(), "--remote-debugging-port=0",
	}, extra...)
	args = append(args, "about:blank")
	cmd := exec.Command(chromiumPath, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the group we started
		_ = cmd.Wait()
	})
	urlc := make(chan string, 1)
	var tail []string
	var tailMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if m := devtoolsRe.FindStringSubmatch(line); m != nil {
				select {
				case urlc <- m[1]:
				default:
				}
			}
			tailMu.Lock()
			if tail = append(tail, line); len(tail) > 20 {
				tail = tail[1:]
			}
			tailMu.Unlock()
		}
	}()
	var wsURL string
	select {
	case wsURL = <-urlc:
	case <-time.After(30 * time.Second):
		tailMu.Lock()
		defer tailMu.Unlock()
		t.Fatalf("chromium did not start:\n%s", strings.Join(tail, "\n"))
	}
	conn, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("connecting to devtools: %v", err)
	}
	conn.SetReadLimit(64 << 20)
	b := &browser{t: t, conn: conn, pending: make(map[int64]chan cdpReply), dead: make(chan struct{})}
	go b.readLoop()
	t.Cleanup(func() { _ = conn.Close() })
	return b
}

func (b *browser) readLoop() {
	defer close(b.dead)
	for {
		_, data, err := b.conn.ReadMessage()
		if err != nil {
			return
		}
		var msg struct {
			ID int64 `json:"id"`
			cdpReply
		}
		if json.Unmarshal(data, &msg) != nil || msg.ID == 0 {
			continue // events are not used
		}
		b.mu.Lock()
		ch := b.pending[msg.ID]
		delete(b.pending, msg.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- msg.cdpReply
		}
	}
}

// call sends one CDP command, to a page session when session is not empty.
func (b *browser) call(ctx context.Context, session, method string, params any, out any) error {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpReply, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	b.wmu.Lock()
	err := b.conn.WriteJSON(msg)
	b.wmu.Unlock()
	if err != nil {
		return err
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
		return errors.New("devtools connection closed")
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// page is one tab, addressed through a flattened CDP session.
type page struct {
	b       *browser
	session string
	name    string
}

func (b *browser) open(ctx context.Context, name, url string) *page {
	b.t.Helper()
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": url}, &target); err != nil {
		b.t.Fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		b.t.Fatal(err)
	}
	return &page{b: b, session: att.SessionID, name: name}
}

// eval evaluates expr in the page, awaiting a promise, and decodes its JSON value into out.
func (p *page) eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception *struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.call(ctx, p.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "awaitPromise": true, "returnByValue": true,
	}, &res)
	if err != nil {
		return err
	}
	if ex := res.ExceptionDetails; ex != nil {
		msg := ex.Text
		if ex.Exception != nil {
			msg = ex.Exception.Description
		}
		return fmt.Errorf("%s: %s", p.name, msg)
	}
	if out != nil && len(res.Result.Value) > 0 {
		return json.Unmarshal(res.Result.Value, out)
	}
	return nil
}

// waitFor polls expr until it is true; on timeout it fails with the page's debug state.
func (p *page) waitFor(ctx context.Context, what, expr string) {
	p.b.t.Helper()
	for {
		var ok bool
		err := p.eval(ctx, "!!("+expr+")", &ok)
		if err == nil && ok {
			return
		}
		select {
		case <-ctx.Done():
			var dbg any
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = p.eval(dctx, `JSON.stringify({icehub: window.icehub, log: (document.getElementById('log')||{}).textContent})`, &dbg)
			p.b.t.Fatalf("%s: timed out waiting for %s (last error %v)\npage state: %v", p.name, what, err, dbg)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
