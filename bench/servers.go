//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pion/stun/v4"
)

// The fixed test identity: one realm and one secret for both TURN servers, so the only
// difference between runs is the server.
const (
	benchRealm  = "example.org"
	benchSecret = "bench-secret-0123456789"
)

// proc is a server the harness started; its PID is what CPU and RSS are read from.
type proc struct {
	name  string
	cmd   *exec.Cmd
	log   string
	turn  *net.UDPAddr // STUN/TURN address, if any
	http  string       // signaling host:port, if any
	admin string       // icehub's admin host:port (metrics, pprof), if any
	done  chan struct{}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, waits up to 5 s, then SIGKILLs: always bounded.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// start runs argv with output to dir/name.log and waits for ready (bounded by 15 s).
func start(dir, name string, argv []string, workdir string, ready func() error) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = lf, lf, workdir
	// Own process group, so a Ctrl-C aimed at the harness reaches the harness's cleanup first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); lf.Close(); close(p.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := ready()
		if err == nil {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited: %s", name, p.tail())
		default:
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s not ready after 15s (%v): %s", name, err, p.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stunReady sends one Binding request and waits 200 ms for the answer.
func stunReady(addr *net.UDPAddr) func() error {
	return func() error {
		c, err := net.DialUDP("udp4", nil, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		m := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		if _, err := c.Write(m.Raw); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 1500)
		if _, err := c.Read(buf); err != nil {
			return err
		}
		return nil
	}
}

func tcpReady(hostport string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", hostport, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	}
}

func all(fs ...func() error) func() error {
	return func() error {
		for _, f := range fs {
			if err := f(); err != nil {
				return err
			}
		}
		return nil
	}
}

// freePort finds a loopback port free for both TCP and UDP (icehub serves TURN on both).
func freePort() (int, error) {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port in 50 tries")
}

// icehubConfig is the equivalent of the coturn command line: loopback listener, loopback
// echo peer allowed, the shared secret and realm, the same relay range, and quotas and rate
// limits lifted so the bench measures throughput, not policy.
func icehubConfig(turnPort, sigPort, adminPort int) string {
	return fmt.Sprintf(`# written by go run ./bench compare
[log]
level = "info"
[turn]
listen = "127.0.0.1:%d"
realm = %q
relay_ports = "40000-60000"
allow_peers = ["127.0.0.1/32"]
max_allocations_per_user = 0
max_allocations = 0
answer_allowance = 1000000000
answer_refill = 1000000000
integrity_rate = 1000000000.0
integrity_burst = 1000000000
max_allocations_per_ip = 0
max_conns_per_ip = 0
[auth]
secrets = [%q]
[signal]
listen = "127.0.0.1:%d"
max_conns_per_ip = 0
messages_per_second = 0.0
[admin]
listen = "127.0.0.1:%d"
`, turnPort, benchRealm, benchSecret, sigPort, adminPort)
}

func startIcehub(dir, bin string) (*proc, error) {
	p, err := startIcehubNode(dir, "icehub", bin, "")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "  icehub pid %d: turn %v, signal %s, admin (pprof) %s\n", p.pid(), p.turn, p.http, p.admin)
	return p, nil
}

// coturnArgs is ANCHORS.md's command line plus what keeps coturn's files in dir.
func coturnArgs(dir string, port int) []string {
	return []string{"turnserver", "-n",
		"--listening-ip=127.0.0.1", "--listening-port=" + strconv.Itoa(port),
		"--use-auth-secret", "--static-auth-secret=" + benchSecret, "--realm=" + benchRealm,
		"--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls",
		"--min-port=40000", "--max-port=60000",
		// quiet and contained: log to a file, pid and user db in the temp dir
		"--no-stdout-log", "--simple-log", "--log-file=" + filepath.Join(dir, "coturn-own.log"),
		"--pidfile=" + filepath.Join(dir, "turnserver.pid"), "--userdb=" + filepath.Join(dir, "turndb"),
	}
}

func startCoturn(dir, bin string) (*proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	argv := coturnArgs(dir, port)
	argv[0] = bin
	turn := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	p, err := start(dir, "coturn", argv, dir, stunReady(turn))
	if err != nil {
		return nil, err
	}
	p.turn = turn
	fmt.Fprintf(os.Stderr, "  coturn pid %d: turn %v\n", p.pid(), turn)
	return p, nil
}

// startSocketIO installs the baseline's locked dependencies if needed and runs it with node
// directly (not through npm), so the PID measured is the server's.
func startSocketIO(dir, sioDir string) (*proc, error) {
	if _, err := os.Stat(filepath.Join(sioDir, "node_modules", "socket.io")); err != nil {
		fmt.Fprintln(os.Stderr, "  npm ci in", sioDir)
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = sioDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("npm ci: %v: %s", err, out)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	host := "127.0.0.1:" + strconv.Itoa(port)
	p, err := start(dir, "socketio", []string{"node", "server.js", strconv.Itoa(port), "127.0.0.1"}, sioDir, tcpReady(host))
	if err != nil {
		return nil, err
	}
	p.http = host
	fmt.Fprintf(os.Stderr, "  socket.io pid %d: %s\n", p.pid(), host)
	return p, nil
}

// buildIcehub compiles the repository's main package; the bench must measure the tree as it is.
func buildIcehub(root, out string) error {
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, b)
	}
	return nil
}

// buildInTemp builds icehub from this checkout into a fresh temporary directory (prefix
// names it) and returns the directory, which the caller removes, and the binary's path.
func buildInTemp(prefix string) (dir, bin string, err error) {
	root, err := repoRoot()
	if err != nil {
		return "", "", err
	}
	if dir, err = os.MkdirTemp("", prefix); err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "icehub")
	if err := buildIcehub(root, bin); err != nil {
		os.RemoveAll(dir)
		return "", "", err
	}
	return dir, bin, nil
}

// repoRoot walks up from the working directory to the go.mod of module icehub.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module icehub") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the icehub module; use -root")
		}
		dir = parent
	}
}
