package main

import (
	"bytes"
	"errors"
	"fmt"
	"image/png"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/html"

	"icehub/internal/testenv"
)

// xssUser is a user name an attacker may choose (printable ASCII, no spaces, as TURN REST
// credentials allow): if the page ever parsed it as markup, the title would change.
const xssUser = `<img/src=x/onerror=document.title='pwned'>`

// TestStatusPageInChromium generates traffic (relayed UDP both ways, Binding requests, two
// WebSockets in a room, three allocations one of which has a hostile user name), loads the
// admin listener's status page in headless Chromium, checks that the charts and the table
// show it, and saves screenshots (desktop and phone widths). Set ICEHUB_STATUS_SCREENSHOTS
// to a directory to keep them (docs/ holds the README's).
func TestStatusPageInChromium(t *testing.T) {
	testenv.Long(t)
	chromium := testenv.Chromium(t)
	p, _ := usageProc(t)
	peer := echoPeer(t)

	alice := mint(t, usageSecret, "alice", time.Hour)
	busy, err := allocate(t, p.turn, alice.Username, alice.Password)
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"bob", xssUser} {
		cr := mint(t, usageSecret, user, time.Hour)
		r, err := allocate(t, p.turn, cr.Username, cr.Password)
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		if err := r.echo(peer, []byte("hello from "+user)); err != nil {
			t.Fatal(err)
		}
	}
	a, b := dialHub(t, p.signal), dialHub(t, p.signal)
	for _, c := range []*wsClient{a, b} {
		c.send(map[string]any{"type": "join", "room": "status-demo"})
		c.expect("joined")
	}

	// Ramp alice's relay up to ~2 Mbit/s each way for a few sampling periods, with Binding
	// requests alongside, so the charts have a shape.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			busy.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, _, err := busy.conn.ReadFrom(buf); err != nil && isClosed(err) {
				return
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	go func() {
		defer wg.Done()
		payload := make([]byte, 1000)
		start := time.Now()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(4 * time.Millisecond):
			}
			if ramp := time.Since(start) / (3 * time.Second); i%4 >= int(ramp)+1 {
				continue // a quarter of the full rate in the first 3 s, half in the next...
			}
			busy.conn.WriteTo(payload, peer)
			if i%20 == 0 {
				busy.client.SendBindingRequest()
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })
	time.Sleep(14 * time.Second) // several 2 s samples

	url := fmt.Sprintf("http://127.0.0.1:%d/", p.admin)
	dom := runChromium(t, chromium, "--window-size=1280,1000", "--dump-dom", url)
	doc, err := html.Parse(strings.NewReader(dom))
	if err != nil {
		t.Fatal(err)
	}
	checkStatusDOM(t, doc)

	outDir := os.Getenv("ICEHUB_STATUS_SCREENSHOTS")
	for name, size := range map[string]string{"status-page.png": "1280,1100", "status-page-phone.png": "390,1600"} {
		shot := filepath.Join(t.TempDir(), name)
		runChromium(t, chromium, "--window-size="+size, "--hide-scrollbars", "--screenshot="+shot, url)
		raw, err := os.ReadFile(shot)
		if err != nil {
			t.Fatalf("no screenshot: %v", err)
		}
		img, err := png.Decode(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if w := img.Bounds().Dx(); strconv.Itoa(w) != strings.Split(size, ",")[0] {
			t.Fatalf("%s is %d px wide, want %s", name, w, size)
		}
		if outDir != "" {
			if err := os.WriteFile(filepath.Join(outDir, name), raw, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// runChromium runs headless Chromium on a fresh profile; the page gets a few seconds of
// (virtual) time to fetch and draw.
func runChromium(t *testing.T, chromium string, args ...string) string {
	t.Helper()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=4000"}
	cmd := exec.Command(chromium, append(base, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chromium: %v\n%s", err, tail(errb.String(), 2000))
		}
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("chromium did not finish\n%s", tail(errb.String(), 2000))
	}
	return out.String()
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

// checkStatusDOM asserts what an operator would see: the three users in the table (the
// hostile one as text), no element the user name could have injected, live numbers in the
// cards and lines with points in every chart, the relayed one above its baseline.
func checkStatusDOM(t *testing.T, doc *html.Node) {
	t.Helper()
	if title := text(find(doc, func(n *html.Node) bool { return n.Data == "title" })[0]); title != "icehub status" {
		t.Fatalf("title %q: a user name ran as script", title)
	}
	if imgs := find(doc, func(n *html.Node) bool { return n.Data == "img" }); len(imgs) > 0 {
		t.Fatalf("%d <img> elements: a user name became markup", len(imgs))
	}
	users := map[string]bool{}
	for _, td := range find(doc, hasClass("td", "user")) {
		users[text(td)] = true
	}
	for _, u := range []string{"alice", "bob", xssUser} {
		if !users[u] {
			t.Fatalf("table users %v lack %q", users, u)
		}
	}
	want := map[string]string{"chart-allocations": "3", "chart-websockets": "2", "chart-rooms": "1"}
	for _, card := range find(doc, func(n *html.Node) bool { return n.Data == "article" }) {
		id := attr(card, "id")
		lines := find(card, func(n *html.Node) bool { return n.Data == "polyline" })
		points := 0
		for _, l := range lines {
			points += len(strings.Fields(attr(l, "points")))
		}
		if points < 4 {
			t.Errorf("%s: %d points drawn", id, points)
		}
		now := text(find(card, hasClass("div", "now"))[0])
		if w, ok := want[id]; ok && now != w {
			t.Errorf("%s shows %q, want %q", id, now, w)
		}
		if id == "chart-relayed" || id == "chart-bindings" {
			if !aboveBaseline(lines) {
				t.Errorf("%s: every point on the baseline although traffic flowed (now %q)", id, now)
			}
		}
	}
}

// aboveBaseline reports whether any point is higher than zero (y < 100 of a 110 px chart).
func aboveBaseline(lines []*html.Node) bool {
	for _, l := range lines {
		for _, pt := range strings.Fields(attr(l, "points")) {
			_, y, _ := strings.Cut(pt, ",")
			if v, err := strconv.ParseFloat(y, 64); err == nil && v < 100 {
				return true
			}
		}
	}
	return false
}

func find(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

func hasClass(tag, class string) func(*html.Node) bool {
	return func(n *html.Node) bool {
		return n.Data == tag && strings.Contains(" "+attr(n, "class")+" ", " "+class+" ")
	}
}

func attr(n *html.Node, name string) string {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val
		}
	}
	return ""
}

func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return b.String()
}

func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }
