package main

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A reload is all or nothing: a file that TURN would accept but that is refused elsewhere
// (a bad signal.allowed_origins, a listen address that needs a restart, a certificate that
// does not load) changes nothing, the deny_peers it also adds included; a good file changes
// everything it names at once.
func TestRefusedReloadChangesNothing(t *testing.T) {
	const base = "auth.secrets = [\"first-secret-value\"]\nturn.allow_peers = [\"127.0.0.1/32\"]\n"
	p := startIcehub(t, base)
	peer := echoPeer(t)
	first := mint(t, "first-secret-value", "u", time.Hour)
	r, err := allocate(t, p.turn, first.Username, first.Password)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.echo(peer, []byte("before")); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	// changed is the running file with the second secret instead of the first, peer 127.0.0.1
	// denied, and extra.
	changed := func(extra string) string {
		return strings.Replace(string(cfg), "first-secret-value", "second-secret-value", 1) +
			"turn.deny_peers = [\"127.0.0.1/32\"]\n" + extra
	}
	reload := func(text, want string) {
		t.Helper()
		if err := os.WriteFile(p.cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		before := strings.Count(p.Logs(), want)
		_ = p.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(5 * time.Second)
		for strings.Count(p.Logs(), want) == before {
			if time.Now().After(deadline) {
				t.Fatalf("no %q after SIGHUP", want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Each of those was refused whole: the peer is still reachable, the first secret works.
	for name, extra := range map[string]string{
		"bad origin":       "signal.allowed_origins = [\"not a url at all\"]\n",
		"restart needed":   "turn.udp_sockets = 3\n",
		"certificate gone": "signal.tls_cert = \"/nonexistent/cert.pem\"\nsignal.tls_key = \"/nonexistent/key.pem\"\n",
	} {
		reload(changed(extra), "reload refused")
		if !strings.Contains(p.Logs(), strings.SplitN(extra, " ", 2)[0]) {
			t.Fatalf("%s: refused for another reason:\n%s", name, p.Logs())
		}
		if err := r.echo(peer, []byte("after a refused reload: "+name)); err != nil {
			t.Fatalf("%s: the refused reload's deny_peers was applied: %v", name, err)
		}
		if _, err := allocate(t, p.turn, first.Username, first.Password); err != nil {
			t.Fatalf("%s: the first secret stopped working: %v", name, err)
		}
	}
	// A good reload applies it all: the peer is denied, only the second secret works.
	reload(changed(""), "msg=reloaded")
	if err := r.echo(peer, []byte("must be denied")); err == nil {
		t.Fatal("deny_peers of a good reload not applied")
	}
	second := mint(t, "second-secret-value", "u2", time.Hour)
	if _, err := allocate(t, p.turn, second.Username, second.Password); err != nil {
		t.Fatalf("the new secret does not work: %v", err)
	}
	if _, err := allocate(t, p.turn, first.Username, first.Password); err == nil {
		t.Fatal("the removed secret still works")
	}
}
