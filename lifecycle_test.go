package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"icehub/auth"
)

func TestReloadOnSIGHUP(t *testing.T) {
	p := startIcehub(t, "auth.secrets = [\"old-secret-value\"]\nturn.allow_peers = [\"127.0.0.1/32\"]\n")
	peer := echoPeer(t)
	before := mint(t, "old-secret-value", "before", time.Hour)
	r1, err := allocate(t, p.turn, before.Username, before.Password)
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.echo(peer, []byte("before reload")); err != nil {
		t.Fatal(err)
	}
	ws := dialHub(t, p.signal)

	// Replace the secret list: only the new secret remains.
	cfg, _ := os.ReadFile(p.cfg)
	os.WriteFile(p.cfg, bytes.Replace(cfg, []byte("old-secret-value"), []byte("new-secret-value"), 1), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "reloaded", 5*time.Second)

	if err := r1.echo(peer, []byte("after reload")); err != nil {
		t.Fatalf("allocation made before the reload stopped relaying: %v", err)
	}
	fresh := mint(t, "new-secret-value", "fresh", time.Hour)
	r2, err := allocate(t, p.turn, fresh.Username, fresh.Password)
	if err != nil {
		t.Fatalf("new secret refused: %v", err)
	}
	if err := r2.echo(peer, []byte("new secret")); err != nil {
		t.Fatal(err)
	}
	stale := mint(t, "old-secret-value", "stale", time.Hour)
	if _, err := allocate(t, p.turn, stale.Username, stale.Password); err == nil {
		t.Fatal("credentials under the removed secret still allocate")
	}
	// The WebSocket survived and the hub now signs with the new secret.
	ws.send(map[string]any{"type": "ice-servers"})
	ice := ws.expect("ice-servers")
	entry := ice["iceServers"].([]any)[1].(map[string]any)
	if auth.Password("new-secret-value", entry["username"].(string)) != entry["credential"] {
		t.Fatalf("hub still signs with the old secret: %v", entry)
	}

	// A broken config is refused and the process keeps serving.
	os.WriteFile(p.cfg, []byte("[turn]\nrelay_ports = \"9-1\"\n"), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "reload refused", 5*time.Second)
	if err := r2.echo(peer, []byte("still up")); err != nil {
		t.Fatalf("relay broken after refused reload: %v", err)
	}
	ws.send(map[string]any{"type": "join", "room": "still-here"})
	ws.expect("joined")
}

func TestSIGTERMClosesWebSocketsAndExits(t *testing.T) {
	p := startIcehub(t, "")
	a, b := dialHub(t, p.signal), dialHub(t, p.signal)
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	for _, c := range []*wsClient{a, b} {
		if code := c.closed(5 * time.Second); code != 1001 {
			t.Fatalf("close code %d, want 1001 going away", code)
		}
	}
	select {
	case <-p.exited:
	case <-time.After(6 * time.Second):
		t.Fatal("no exit within shutdown_timeout")
	}
	if p.err != nil {
		t.Fatalf("exit status %v, want 0", p.err)
	}
	t.Logf("stopped in %s", time.Since(start))
	if _, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.signal)); err == nil {
		t.Fatal("signal port still accepting after exit")
	}
}

func TestSdNotify(t *testing.T) {
	sockPath := filepath.Join(t.TempDir(), "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 512)
		for {
			n, err := sock.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(want string) {
		t.Helper()
		select {
		case m := <-msgs:
			if !strings.Contains(m, want) {
				t.Fatalf("sd_notify %q, want %q", m, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no sd_notify %q", want)
		}
	}
	p := startIcehubOpts(t, opts{env: []string{"NOTIFY_SOCKET=" + sockPath}})
	next("READY=1")
	p.cmd.Process.Signal(syscall.SIGHUP)
	next("RELOADING=1")
	next("READY=1")
	p.cmd.Process.Signal(syscall.SIGTERM)
	next("STOPPING=1")
	<-p.exited
}

func TestNoCredentialOrSecretInLogs(t *testing.T) {
	const secret = "never-log-this-secret"
	p := startIcehub(t, "log.level = \"debug\"\nlog.format = \"json\"\nauth.secrets = [\""+secret+"\"]\nturn.allow_peers = [\"127.0.0.1/32\"]\n")
	good := mint(t, secret, "logged-user", time.Hour)
	r, err := allocate(t, p.turn, good.Username, good.Password)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.echo(echoPeer(t), []byte("x")); err != nil {
		t.Fatal(err)
	}
	const wrong = "a-wrong-password-guess"
	if _, err := allocate(t, p.turn, good.Username, wrong); err == nil {
		t.Fatal("wrong password allocated")
	}
	ws := dialHub(t, p.signal)
	welcome := turnEntry(t, ws.ice, p.turn)
	ws.send(map[string]any{"type": "ice-servers"})
	ws.expect("ice-servers")
	time.Sleep(200 * time.Millisecond)
	logs := p.Logs()
	if !strings.Contains(logs, "turn allocation created") || !strings.Contains(logs, "logged-user") {
		t.Fatalf("expected allocation lines in the debug log:\n%s", logs)
	}
	for name, s := range map[string]string{"secret": secret, "password": good.Password, "wrong password": wrong, "welcome credential": welcome.Credential} {
		if strings.Contains(logs, s) {
			t.Errorf("the log contains the %s %q", name, s)
		}
	}
}
