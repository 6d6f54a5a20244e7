package main

import (
	"bufio"
	"bytes"
	"errors"
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

	"icehub/internal/metrictest"

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

// startIcehubWrapped is startIcehub run under a wrapper command (e.g. prlimit).
func startIcehubWrapped(t *testing.T, wrapper []string, extra string) *proc {
	t.Helper()
	return startIcehubOpts(t, opts{extra: extra, wrapper: wrapper})
}

// adminMetric reads one unlabelled (or exactly labelled, "name{k=\"v\"}") series; 0 when absent.
func adminMetric(t *testing.T, p *proc, series string) float64 {
	t.Helper()
	return scrape(t, p)[series]
}

func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// pid is the icehub process (the wrapper, prlimit, execs it, so the PID is the same).
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exhaustFDs opens WebSockets to p until one fails (at most 200) and returns the open ones;
// it fails the test if the limit was never reached.
func exhaustFDs(t *testing.T, p *proc) []*websocket.Conn {
	t.Helper()
	var conns []*websocket.Conn
	hdr := http.Header{"Origin": {fmt.Sprintf("http://127.0.0.1:%d", p.signal)}}
	d := websocket.Dialer{HandshakeTimeout: 2 * time.Second}
	for range 200 {
		c, _, err := d.Dial(fmt.Sprintf("ws://127.0.0.1:%d/ws", p.signal), hdr)
		if err != nil {
			return conns
		}
		conns = append(conns, c)
	}
	t.Fatalf("opened %d WebSockets without reaching the descriptor limit", len(conns))
	return nil
}

func runBin(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(binPath, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return o.String(), e.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), 0
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// scrape reads the admin /metrics page into "name{labels}" → value, on a fresh connection so
// the scrape leaves no idle connection (and descriptor) behind.
func scrape(t *testing.T, p *proc) map[string]float64 {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	m, err := metrictest.Scrape(c, fmt.Sprintf("http://127.0.0.1:%d/metrics", p.admin))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
