//go:build linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"icehub/internal/netlab"
	"icehub/internal/testcert"
)

const (
	labSecret  = "natlab-shared-secret"
	relayPorts = "50000-50999"
)

// hubOpts are the settings a case varies.
type hubOpts struct {
	noPublicIP bool     // leave turn.public_ip unset behind the 1:1 NAT (the misconfiguration)
	iceURLs    []string // signal.ice_urls; empty: derived from the listeners and public_ip
}

// hub is icehub running in a server site: one process at a time, which stop ends and start
// runs again on the same configuration (addresses, secret, certificate).
type hub struct {
	site   *site
	bin    string
	cfg    string
	mu     sync.Mutex
	logs   strings.Builder
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// startHub runs the icehub binary in s.host with STUN/TURN on :3478 (UDP and TCP) and TURN
// over TLS, HTTPS and WSS sharing :443, peers allowed in the documentation ranges only.
func startHub(t *testing.T, s *site, o hubOpts) *hub {
	t.Helper()
	dir := t.TempDir()
	cert, key := testcert.New(t, labServerAddrs...).Write(t, dir)
	listen := []string{fmt.Sprintf("%q", net.JoinHostPort(s.private, "3478"))}
	if s.ip6 != "" {
		listen = append(listen, fmt.Sprintf("%q", net.JoinHostPort(s.ip6, "3478")))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server.shutdown_timeout = \"2s\"\nauth.secrets = [%q]\nadmin.listen = \"\"\n", labSecret)
	fmt.Fprintf(&b, "turn.listen = [%s]\nturn.relay_ports = %q\n", strings.Join(listen, ", "), relayPorts)
	fmt.Fprintf(&b, "turn.allow_peers = [\"192.0.2.0/24\", \"198.51.100.0/24\", \"203.0.113.0/24\", \"2001:db8::/32\"]\n")
	if s.router != nil && !o.noPublicIP {
		fmt.Fprintf(&b, "turn.public_ip = %q\n", s.public)
	}
	tls := net.JoinHostPort(s.private, "443")
	fmt.Fprintf(&b, "turn.tls_listen = [%q]\nturn.tls_cert = %q\nturn.tls_key = %q\n", tls, cert, key)
	fmt.Fprintf(&b, "signal.listen = %q\nsignal.tls_cert = %q\nsignal.tls_key = %q\n", tls, cert, key)
	if len(o.iceURLs) > 0 {
		fmt.Fprintf(&b, "signal.ice_urls = [\"%s\"]\n", strings.Join(o.iceURLs, `", "`))
	}
	h := &hub{site: s, bin: icehubBinary(t), cfg: filepath.Join(dir, "server.toml")}
	if err := os.WriteFile(h.cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.kill()
		if t.Failed() {
			t.Logf("icehub in %s (%s):\n%s", s.name, h.cfg, h.Logs())
		}
	})
	h.start(t)
	return h
}

// start runs icehub on h's configuration and returns when it logs that it is ready, with the
// time it did.
func (h *hub) start(t *testing.T) time.Time {
	t.Helper()
	if h.cmd != nil {
		t.Fatal("icehub started twice: stop it first")
	}
	cmd := h.site.host.Command(context.Background(), h.bin, "-config", h.cfg)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.cmd, h.exited = cmd, make(chan struct{})
	ready, exited := make(chan time.Time, 1), h.exited
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var once sync.Once
		for sc.Scan() {
			h.mu.Lock()
			h.logs.WriteString(sc.Text() + "\n")
			h.mu.Unlock()
			if strings.Contains(sc.Text(), "icehub ready") {
				once.Do(func() { ready <- time.Now() })
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case at := <-ready:
		return at
	case <-exited:
		t.Fatalf("icehub in %s exited before ready:\n%s", h.site.name, h.Logs())
	case <-time.After(20 * time.Second):
		t.Fatalf("icehub in %s not ready in 20s:\n%s", h.site.name, h.Logs())
	}
	return time.Time{}
}

// stop sends sig to icehub (SIGTERM: it closes every WebSocket with 1001 and drains;
// SIGKILL: it just dies) and waits until it has exited.
func (h *hub) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if h.cmd == nil {
		return
	}
	if err := h.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling icehub: %v", err)
	}
	select {
	case <-h.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("icehub in %s still running 15s after %v:\n%s", h.site.name, sig, h.Logs())
	}
	h.cmd = nil
	h.mu.Lock()
	fmt.Fprintf(&h.logs, "--- stopped by %v ---\n", sig)
	h.mu.Unlock()
}

// kill ends the running icehub, if any, with whatever it started.
func (h *hub) kill() {
	if h.cmd == nil {
		return
	}
	_ = netlab.KillGroup(h.cmd)
	<-h.exited
	h.cmd = nil
}

// Logs returns what icehub has logged so far.
// labServerAddrs are the lab's server addresses, the names its certificate is for.
var labServerAddrs = []string{"203.0.113.2", "203.0.113.3", "203.0.113.4", "198.51.100.2", "198.51.100.18", "2001:db8:1::2"}

func (h *hub) Logs() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.logs.String()
}
