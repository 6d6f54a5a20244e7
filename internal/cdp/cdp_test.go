//go:build unix

package cdp

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"icehub/internal/testenv"
)

// TestPipeSession drives a real headless Chromium over the pipe: an init script runs before
// the page's own, evaluation returns values and errors, console output is collected.
func TestPipeSession(t *testing.T) {
	testenv.Long(t)
	chromium := testenv.Chromium(t)
	b, err := Launch(exec.Command(chromium, Flags(t.TempDir())...))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := b.NewPage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddInitScript(ctx, `window.__early = String(document.body === null);`); err != nil {
		t.Fatal(err)
	}
	if err := p.Navigate(ctx, `data:text/html,<body><script>console.log("page", window.__early)</script></body>`); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(ctx, `Promise.resolve(document.readyState === "complete")`); err != nil {
		t.Fatal(err)
	}
	var sum int
	if err := p.Eval(ctx, `new Promise(r => setTimeout(() => r(20 + 22), 10))`, &sum); err != nil || sum != 42 {
		t.Fatalf("eval: %d %v", sum, err)
	}
	if err := p.Eval(ctx, `(() => { throw new Error("boom") })()`, nil); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("a thrown error came back as %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(strings.Join(p.Console(), "\n"), "log: page true") {
		if time.Now().After(deadline) {
			t.Fatalf("console: %q (the init script must run before the page's script, when there is no body yet)", p.Console())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A promise is truthy whatever it resolves to: WaitFor must wait for its value.
	for _, expr := range []string{`false`, `Promise.resolve(false)`} {
		short, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
		err := p.WaitFor(short, expr)
		cancel2()
		if err == nil {
			t.Fatalf("WaitFor(%s) returned no error", expr)
		}
	}
	// A chatty page keeps its latest lines, a bounded number of them.
	if err := p.Eval(ctx, `(() => { for (let i = 0; i < 700; i++) console.log("line", i); })()`, nil); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c := p.Console()
		if len(c) > 0 && c[len(c)-1] == "log: line 699" {
			if len(c) != consoleLines {
				t.Fatalf("kept %d console lines, want %d", len(c), consoleLines)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the last console line is not the page's latest: %q", c[max(0, len(c)-3):])
		}
	}
}
