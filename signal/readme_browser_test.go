//go:build unix

package signal

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestBrowserReadmeExample runs the README's icehub.js example as written, from a page on
// another origin (which imports the library across origins, as applications do), in two
// tabs: they must end up in a call, decoding each other's video.
func TestBrowserReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## How a browser uses it.*?```html\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README: no html example under \"How a browser uses it\"")
	}
	ring := newTestRing(t)
	e := newEnvWith(t, time.Hour, startTURN(t, ring), ring, nil)
	hubHost := strings.TrimPrefix(e.srv.URL, "http://")
	html := strings.NewReplacer("https://turn.example.org", e.srv.URL, "wss://turn.example.org", "ws://"+hubHost).Replace(string(m[1]))
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!doctype html>\n" + html))
	}))
	defer app.Close()

	b := launchBrowser(t, fakeMedia...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pages := []*page{b.open(ctx, "A", app.URL), b.open(ctx, "B", app.URL)}
	for _, p := range pages {
		p.waitFor(ctx, "the example's call decoding video", `(() => {
			const s = JSON.parse(document.getElementById('path').textContent || 'null');
			return s && s.state === 'connected' && s.framesDecoded > 10;
		})()`)
	}
	// Its hang-up button: the other page's call goes back to waiting.
	pages[0].mustEval(ctx, `(document.getElementById('hangup').click(), true)`, nil)
	pages[1].waitFor(ctx, "the call ended by the other side", `document.getElementById('path').textContent === 'null'`)
}
