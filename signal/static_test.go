package signal

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestClientLibraryServed: /icehub.js is served as JavaScript (browsers refuse module scripts
// of any other type under nosniff) and may be imported by pages of other origins;
// /icehub.d.ts comes as text, not as the system MIME table's guess for ".ts".
func TestClientLibraryServed(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	for _, c := range []struct {
		path, ctype, body string
		cors              bool
	}{
		{"/icehub.js", "text/javascript; charset=utf-8", "export function connect(", true},
		{"/icehub.d.ts", "text/plain; charset=utf-8", "export declare function call(", true},
		{"/call.js", "text/javascript; charset=utf-8", "from './icehub.js'", false},
		{"/call.html", "text/html; charset=utf-8", `<script type="module"`, false},
	} {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+c.path, nil)
		req.Header.Set("Origin", "https://app.example")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != c.ctype {
			t.Errorf("%s: %d %q, want 200 %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), c.ctype)
		}
		if !strings.Contains(string(b), c.body) {
			t.Errorf("%s: body lacks %q", c.path, c.body)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin") == "*"; got != c.cors {
			t.Errorf("%s: Access-Control-Allow-Origin %q", c.path, resp.Header.Get("Access-Control-Allow-Origin"))
		}
	}
	resp, err := http.Get(e.srv.URL + "/missing.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") {
		t.Errorf("/missing.js: %d %q, want 404 as text", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
