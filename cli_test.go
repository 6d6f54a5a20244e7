// The command line: flags, exit codes, -check and the creds subcommand.
package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestCommandLine(t *testing.T) {
	good := writeFile(t, "[auth]\nsecrets = [\"command-line-secret\"]\n")
	bad := writeFile(t, "[turn]\nrelay_ports = \"60000-50000\"\n")
	cases := []struct {
		name     string
		args     []string
		code     int
		stdout   string
		stderrIn string
	}{
		{"version flag", []string{"-version"}, 0, "icehub ", ""},
		{"version command", []string{"version"}, 0, "icehub ", ""},
		{"check flag ok", []string{"-check", "-config", good}, 0, ": ok", ""},
		{"check command ok", []string{"check", "-config", good}, 0, ": ok", ""},
		{"shipped server.toml", []string{"-check", "-config", "server.toml"}, 0, ": ok", ""},
		{"check bad", []string{"-check", "-config", bad}, 2, "", "line 2: key turn.relay_ports"},
		{"run bad", []string{"-config", bad}, 2, "", "turn.relay_ports"},
		{"missing file", []string{"-config", "/nonexistent.toml"}, 2, "", "no such file"},
		{"usage", []string{"-h"}, 0, "", "icehub creds -user"},
		{"stray argument", []string{"serve"}, 2, "", "unexpected argument"},
		{"creds without user", []string{"creds", "-config", good}, 2, "", "-user"},
		{"creds with generated secret", []string{"creds", "-user", "a", "-config", bad}, 2, "", "turn.relay_ports"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runBin(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderrIn) {
				t.Fatalf("exit %d stdout %q stderr %q; want exit %d, stdout ∋ %q, stderr ∋ %q",
					code, out, errOut, tc.code, tc.stdout, tc.stderrIn)
			}
		})
	}
}

func TestCredsCommandMintsWorkingCredentials(t *testing.T) {
	p := startIcehub(t, "auth.secrets = [\"creds-command-secret\"]\nturn.allow_peers = [\"127.0.0.1/32\"]\n")
	out, errOut, code := runBin(t, "creds", "-user", "alice", "-ttl", "1h", "-config", p.cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got struct {
		ICEServers []struct {
			URLs       []string `json:"urls"`
			Username   string   `json:"username"`
			Credential string   `json:"credential"`
		} `json:"iceServers"`
		TTL int `json:"ttl"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if got.TTL != 3600 || len(got.ICEServers) != 2 {
		t.Fatalf("creds output %s", out)
	}
	turnEntry := got.ICEServers[1]
	if !strings.HasSuffix(turnEntry.Username, ":alice") || !strings.Contains(strings.Join(turnEntry.URLs, " "), fmt.Sprintf("turn:127.0.0.1:%d", p.turn)) {
		t.Fatalf("TURN entry %+v", turnEntry)
	}
	r, err := allocate(t, p.turn, turnEntry.Username, turnEntry.Credential)
	if err != nil {
		t.Fatalf("creds from the CLI refused: %v", err)
	}
	if err := r.echo(echoPeer(t), []byte("via cli creds")); err != nil {
		t.Fatal(err)
	}
}
