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

	"icehub/internal/testenv"
)

// A minimal Chrome DevTools Protocol client: enough to open pages, evaluate JavaScript in
// them and keep their console output for failure messages, without pulling a
// browser-automation library into the module.

type browser struct {
	t    *testing.T
	conn *websocket.Conn

	wmu     sync.Mutex
	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan cdpReply
	pages   map[string]*page // by CDP session id
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
// process group is killed when the test ends. Browser tests are long tests: they skip under
// -short, and without Chromium on PATH.
func launchBrowser(t *testing.T, extra ...string) *browser {
	t.Helper()
	testenv.Long(t)
	chromium := testenv.Chromium(t)
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		// The machine may have no internet: background fetches would only fail, noisily.
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
		// Every tab keeps full-speed timers and media: two "users" share one browser here.
		"--disable-background-timer-throttling", "--disable-renderer-backgrounding",
		"--disable-backgrounding-occluded-windows",
		"--user-data-dir=" + t.TempDir(), "--remote-debugging-port=0",
	}, extra...)
	args = append(args, "about:blank")
	cmd := exec.Command(chromium, args...)
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
	b := &browser{t: t, conn: conn, pending: make(map[int64]chan cdpReply), pages: make(map[string]*page), dead: make(chan struct{})}
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
			ID        int64           `json:"id"`
			Method    string          `json:"method"`
			SessionID string          `json:"sessionId"`
			Params    json.RawMessage `json:"params"`
			cdpReply
		}
		if json.Unmarshal(data, &msg) != nil {
			continue
		}
		if msg.ID == 0 {
			b.mu.Lock()
			p := b.pages[msg.SessionID]
			b.mu.Unlock()
			if p != nil {
				p.event(msg.Method, msg.Params)
			}
			continue
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

	mu      sync.Mutex
	console []string // the last lines the page logged, and its uncaught exceptions
}

// open creates a tab, starts collecting its console and only then loads url, so nothing the
// page logs is missed.
func (b *browser) open(ctx context.Context, name, url string) *page {
	b.t.Helper()
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		b.t.Fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		b.t.Fatal(err)
	}
	p := &page{b: b, session: att.SessionID, name: name}
	b.mu.Lock()
	b.pages[p.session] = p
	b.mu.Unlock()
	if err := b.call(ctx, p.session, "Runtime.enable", map[string]any{}, nil); err != nil {
		b.t.Fatal(err)
	}
	if err := b.call(ctx, p.session, "Page.navigate", map[string]any{"url": url}, nil); err != nil {
		b.t.Fatal(err)
	}
	return p
}

const consoleLines = 60

// event records console output and uncaught exceptions.
func (p *page) event(method string, params json.RawMessage) {
	var line string
	switch method {
	case "Runtime.consoleAPICalled":
		var ev struct {
			Type string `json:"type"`
			Args []struct {
				Value       any    `json:"value"`
				Description string `json:"description"`
			} `json:"args"`
		}
		if json.Unmarshal(params, &ev) != nil {
			return
		}
		parts := []string{ev.Type + ":"}
		for _, a := range ev.Args {
			if a.Value != nil {
				parts = append(parts, fmt.Sprint(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		line = strings.Join(parts, " ")
	case "Runtime.exceptionThrown":
		var ev struct {
			Details struct {
				Text      string `json:"text"`
				Exception *struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		if json.Unmarshal(params, &ev) != nil {
			return
		}
		line = "exception: " + ev.Details.Text
		if ev.Details.Exception != nil {
			line += " " + ev.Details.Exception.Description
		}
	default:
		return
	}
	p.mu.Lock()
	if p.console = append(p.console, line); len(p.console) > consoleLines {
		p.console = p.console[1:]
	}
	p.mu.Unlock()
}

// consoleText returns what the page logged, for failure messages.
func (p *page) consoleText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.console, "\n")
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

// mustEval is eval that fails the test on error.
func (p *page) mustEval(ctx context.Context, expr string, out any) {
	p.b.t.Helper()
	if err := p.eval(ctx, expr, out); err != nil {
		p.fatalf("evaluating %s: %v", expr, err)
	}
}

// waitFor polls expr until it is true; on timeout it fails with the page's debug state.
func (p *page) waitFor(ctx context.Context, what, expr string) {
	p.b.t.Helper()
	var err error
	for {
		var ok bool
		err = p.eval(ctx, "!!("+expr+")", &ok)
		if err == nil && ok {
			return
		}
		select {
		case <-ctx.Done():
			p.fatalf("timed out waiting for %s (last error %v)", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitUntil is waitFor that reports a timeout instead of failing.
func (p *page) waitUntil(ctx context.Context, d time.Duration, expr string) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		var ok bool
		if err := p.eval(ctx, "!!("+expr+")", &ok); err == nil && ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// fatalf fails the test with the page's state and console.
func (p *page) fatalf(format string, args ...any) {
	p.b.t.Helper()
	p.b.t.Fatalf("%s: %s\npage state: %s\nconsole:\n%s", p.name, fmt.Sprintf(format, args...), p.debugState(), p.consoleText())
}

// debugState describes the page for a failure message: the demo's hub and call, the
// RTCPeerConnection, the signaling trace (traceJS) and the page's log panel.
func (p *page) debugState() string {
	var dbg string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.eval(ctx, `JSON.stringify({
		hub: window.demo && demo.hub && {id: demo.hub.id, state: demo.hub.state, rooms: demo.hub.rooms},
		call: window.demo && demo.call && {state: demo.call.state, counters: demo.call.counters, remote: demo.call.remote,
			polite: demo.call.polite, pc: demo.call.pc && {signaling: demo.call.pc.signalingState,
				ice: demo.call.pc.iceConnectionState, gathering: demo.call.pc.iceGatheringState,
				local: /a=ice-ufrag:(\S+)/.exec((demo.call.pc.localDescription || {}).sdp)?.[1],
				remote: /a=ice-ufrag:(\S+)/.exec((demo.call.pc.remoteDescription || {}).sdp)?.[1]}},
		trace: window.trace,
		log: (document.getElementById('log') || {}).textContent})`, &dbg)
	if err != nil {
		return err.Error()
	}
	return dbg
}
