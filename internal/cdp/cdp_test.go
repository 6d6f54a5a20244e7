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
	short, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if err := p.WaitFor(short, `false`); err == nil {
		t.Fatal("WaitFor(false) returned no error")
	}
}
