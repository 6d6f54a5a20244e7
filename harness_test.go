package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// binPath is the icehub binary TestMain builds once for every process-level test.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "icehub-bin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "icehub")
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building icehub: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback port free on both UDP and TCP at the time of asking.
func freePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// proc is one running icehub process.
type proc struct {
	cmd    *exec.Cmd
	cfg    string // path of its config file
	turn   int
	signal int
	admin  int
	mu     sync.Mutex
	logs   bytes.Buffer
	exited chan struct{}
	err    error
}

// startIcehub writes extra TOML after a loopback [server]/[turn]/[signal]/[admin] base and
// starts the binary, waiting until it logs readiness. extra may add keys to [turn] etc. by
// using dotted keys ("turn.allow_peers = [...]").
func startIcehub(t *testing.T, extra string) *proc {
	t.Helper()
	return startIcehubOpts(t, opts{extra: extra})
}

// opts are startIcehubOpts' knobs: extra TOML, extra environment, a fixed signal port.
type opts struct {
	extra      string
	env        []string
	signalPort int
	wrapper    []string // run the binary under this command, e.g. prlimit
	config     string   // when set, the whole config file (instead of the loopback base and extra)
}

func startIcehubOpts(t *testing.T, o opts) *proc {
	t.Helper()
	extra, env := o.extra, o.env
	p := &proc{turn: freePort(t), signal: o.signalPort, admin: freePort(t), exited: make(chan struct{})}
	if p.signal == 0 {
		p.signal = freePort(t)
	}
	p.cfg = filepath.Join(t.TempDir(), "server.toml")
	base := fmt.Sprintf(`turn.listen = "127.0.0.1:%d"
turn.relay_ports = "62000-62999" # above the kernel's ephemeral ports, which test clients use
turn.udp_sockets = 2
signal.listen = "127.0.0.1:%d"
admin.listen = "127.0.0.1:%d"
server.shutdown_timeout = "5s"
`, p.turn, p.signal, p.admin)
	if o.config != "" {
		base, extra = o.config, ""
	}
	if err := os.WriteFile(p.cfg, []byte(base+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	argv := append(append([]string{}, o.wrapper...), binPath, "-config", p.cfg)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			if strings.Contains(line, "icehub ready") {
				once.Do(func() { close(ready) })
			}
		}
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("icehub log (%s):\n%s", p.cfg, p.Logs())
		}
	})
	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("icehub exited before ready: %v\n%s", p.err, p.Logs())
	case <-time.After(15 * time.Second):
		t.Fatalf("icehub not ready in 15s\n%s", p.Logs())
	}
	return p
}

// Logs returns what the process has logged so far.
func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// waitLog waits until the log contains s.
func (p *proc) waitLog(t *testing.T, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Logs(), s) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("log never said %q:\n%s", s, p.Logs())
}

// wsClient is a test peer on the hub.
type wsClient struct {
	t       *testing.T
	c       *websocket.Conn
	id      string
	ice     json.RawMessage
	welcome map[string]any
	msgs    chan map[string]any
	err     error // the read error that ended the connection, set before msgs closes
}

func dialHub(t *testing.T, port int) *wsClient {
	t.Helper()
	return dialHubQuery(t, port, "")
}

// dialHubQuery dials /ws with a query string, e.g. "?resume=TOKEN".
func dialHubQuery(t *testing.T, port int, query string) *wsClient {
	t.Helper()
	hdr := http.Header{"Origin": {fmt.Sprintf("http://127.0.0.1:%d", port)}}
	c, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/ws%s", port, query), hdr)
	if err != nil {
		t.Fatal(err)
	}
	w := &wsClient{t: t, c: c, msgs: make(chan map[string]any, 64)}
	t.Cleanup(func() { c.Close() })
	go func() {
		defer close(w.msgs)
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				w.err = err
				return
			}
			var m map[string]any
			if json.Unmarshal(b, &m) == nil {
				w.msgs <- m
			}
		}
	}()
	welcome := w.expect("welcome")
	w.welcome = welcome
	w.id, _ = welcome["id"].(string)
	w.ice, _ = json.Marshal(welcome["iceServers"])
	return w
}

func (w *wsClient) send(v map[string]any) {
	w.t.Helper()
	if err := w.c.WriteJSON(v); err != nil {
		w.t.Fatal(err)
	}
}

// expect returns the next frame, failing unless it has the given type.
func (w *wsClient) expect(typ string) map[string]any {
	w.t.Helper()
	select {
	case m, ok := <-w.msgs:
		if !ok {
			w.t.Fatalf("connection closed while waiting for %q", typ)
		}
		if m["type"] != typ {
			w.t.Fatalf("got %v, want type %q", m, typ)
		}
		return m
	case <-time.After(10 * time.Second):
		w.t.Fatalf("no %q frame within 10s", typ)
	}
	return nil
}

// closed waits for the server to end the connection and returns its close code.
func (w *wsClient) closed(within time.Duration) int {
	w.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case _, ok := <-w.msgs:
			if !ok {
				if ce, ok := w.err.(*websocket.CloseError); ok {
					return ce.Code
				}
				return -1
			}
		case <-deadline:
			w.t.Fatal("connection still open")
		}
	}
}

// quiet asserts no frame arrives for d.
func (w *wsClient) quiet(d time.Duration) {
	w.t.Helper()
	select {
	case m := <-w.msgs:
		w.t.Fatalf("unexpected frame %v", m)
	case <-time.After(d):
	}
}
