//go:build unix

package signal

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"icehub/internal/cdp"
	"icehub/internal/testenv"
)

// The browser tests' view of internal/cdp: a page that knows its test and its name, so that a
// step that goes wrong fails the test with the page's state and console in the message.

type browser struct {
	t *testing.T
	*cdp.Browser
}

// launchBrowser starts headless Chromium with a fresh profile (cdp.Flags) plus extra flags;
// it is killed when the test ends. Browser tests are long tests: they skip under -short, and
// without Chromium on PATH.
func launchBrowser(t *testing.T, extra ...string) *browser {
	t.Helper()
	testenv.Long(t)
	chromium := testenv.Chromium(t)
	flags := append(cdp.Flags(t.TempDir()),
		// Every tab keeps full-speed timers and media: two "users" share one browser here.
		"--disable-background-timer-throttling", "--disable-renderer-backgrounding",
		"--disable-backgrounding-occluded-windows")
	b, err := cdp.Launch(exec.Command(chromium, append(flags, extra...)...))
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &browser{t: t, Browser: b}
}

// page is one tab of a test's browser.
type page struct {
	t    *testing.T
	name string
	*cdp.Page
}

// open creates a tab, which collects its console from the start, and loads url in it.
func (b *browser) open(ctx context.Context, name, url string) *page {
	b.t.Helper()
	cp, err := b.NewPage(ctx)
	if err != nil {
		b.t.Fatalf("%s: %v", name, err)
	}
	p := &page{t: b.t, name: name, Page: cp}
	if err := p.Navigate(ctx, url); err != nil {
		p.fatalf("%v", err)
	}
	return p
}

// mustEval is Eval that fails the test on error.
func (p *page) mustEval(ctx context.Context, expr string, out any) {
	p.t.Helper()
	if err := p.Eval(ctx, expr, out); err != nil {
		p.fatalf("evaluating %s: %v", expr, err)
	}
}

// waitFor waits until expr (a boolean, or a promise of one) is true; when ctx ends first it
// fails the test, saying what it waited for.
func (p *page) waitFor(ctx context.Context, what, expr string) {
	p.t.Helper()
	if err := p.WaitFor(ctx, expr); err != nil {
		p.fatalf("timed out waiting for %s: %v", what, err)
	}
}

// waitUntil is waitFor for at most d, reporting a timeout instead of failing.
func (p *page) waitUntil(ctx context.Context, d time.Duration, expr string) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return p.WaitFor(ctx, expr) == nil
}

// consoleShown is how many of its latest console lines a failing page shows.
const consoleShown = 60

// fatalf fails the test with the page's state and console.
func (p *page) fatalf(format string, args ...any) {
	p.t.Helper()
	lines := p.Console()
	lines = lines[max(0, len(lines)-consoleShown):]
	p.t.Fatalf("%s: %s\npage state: %s\nconsole:\n%s", p.name, fmt.Sprintf(format, args...), p.debugState(), strings.Join(lines, "\n"))
}

// debugState describes the page for a failure message: the demo's hub and call, the
// RTCPeerConnection, the signaling trace (traceJS) and the page's log panel.
func (p *page) debugState() string {
	var dbg string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.Eval(ctx, `JSON.stringify({
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
