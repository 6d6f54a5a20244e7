package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// badValues holds, for every key server.toml documents, a value that must not start.
var badValues = map[string]string{
	"server.shutdown_timeout":       `"0s"`,
	"server.gc_percent":             `-1`,
	"server.drain_timeout":          `"-1s"`,
	"log.level":                     `"loud"`,
	"log.format":                    `"xml"`,
	"turn.listen":                   `"not-an-address"`,
	"turn.realm":                    `""`,
	"turn.public_ip":                `"turn.example.org"`,
	"turn.relay_ip":                 `"300.1.1.1"`,
	"turn.relay_ports":              `"9-1"`,
	"turn.allow_peers":              `["10.0.0.0/33"]`,
	"turn.deny_peers":               `["nope"]`,
	"turn.max_allocations_per_user": `-1`,
	"turn.max_allocations":          `-1`,
	"turn.max_allocations_per_ip":   `-1`,
	"turn.max_conns_per_ip":         `-1`,
	"turn.allocate_timeout":         `"soon"`,
	"turn.tcp_relay":                `"yes"`,
	"turn.udp_sockets":              `1000`,
	"turn.answer_allowance":         `10`,
	"turn.answer_refill":            `-1`,
	"turn.integrity_rate":           `-1.0`,
	"turn.integrity_burst":          `-1`,
	"turn.offload":                  `"ebpf"`,
	"turn.offload_interfaces":       `["eth0/1"]`,
	"turn.max_bitrate":              `"fast"`,
	"turn.total_bitrate":            `"1k"`, // under the 16k floor
	"turn.stun_only":                `"yes"`,
	"turn.alternate_servers":        `["turn.example.org:3478"]`, // a name, not an address
	"turn.tls_listen":               `["127.0.0.1:0"]`,           // without a certificate
	"turn.tls_cert":                 `"/nonexistent/cert.pem"`,
	"turn.tls_key":                  `"/nonexistent/key.pem"`, // a key without a certificate
	"turn.proxy_from":               `["0.0.0.0/0"]`,
	"auth.secrets":                  `["short"]`,
	"auth.ttl":                      `"0s"`,
	"signal.listen":                 `"localhost"`,
	"signal.ice_urls":               `["http://example.org"]`,
	"signal.max_peers_per_room":     `0`,
	"signal.max_rooms_per_conn":     `0`,
	"signal.max_frame_bytes":        `10`,
	"signal.send_queue":             `0`,
	"signal.ping_interval":          `"1ms"`,
	"signal.allowed_origins":        `["not a url at all"]`,
	"signal.public_origins":         `["ftp://example.org"]`,
	"signal.api_keys":               `"one-key"`, // a string, not a list
	"signal.max_conns_per_ip":       `-1`,
	"signal.messages_per_second":    `-1.0`,
	"signal.message_burst":          `-1`,
	"signal.resume_window":          `"-1s"`,
	"signal.resume_buffer":          `0`,
	"signal.idle_timeout":           `"1ms"`,
	"signal.read_timeout":           `"1ms"`,
	"signal.tls_cert":               `"/nonexistent/cert.pem"`,
	"signal.tls_key":                `"/nonexistent/key.pem"`,
	"signal.proxy_from":             `["::/0"]`,
	"signal.client_ip_header":       `"X-Real-IP"`,
	"admin.listen":                  `"nowhere"`,
	"cluster.redis_url":             `"redis://127.0.0.1:6379/not-a-db"`,
	"cluster.member_ttl":            `"0s"`,
	"cluster.node_id":               `"two words"`,
	"usage.file":                    `"/nonexistent-icehub-dir/usage.jsonl"`,
}

// documentedKeys lists the dotted keys of server.toml.
func documentedKeys(t *testing.T) []string {
	t.Helper()
	var doc map[string]map[string]any
	if _, err := toml.DecodeFile("server.toml", &doc); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for table, kv := range doc {
		for k := range kv {
			keys = append(keys, table+"."+k)
		}
	}
	slices.Sort(keys)
	return keys
}

// A file `icehub -check` accepts must start, and one it refuses must not: for every key
// server.toml documents, a bad value makes both -check and start-up exit 2 naming the key
// and its line, and start-up never gets as far as serving.
func TestCheckAndStartAgree(t *testing.T) {
	base := map[string]string{
		"turn.listen":   fmt.Sprintf(`"127.0.0.1:%d"`, freePort(t)),
		"signal.listen": fmt.Sprintf(`"127.0.0.1:%d"`, freePort(t)),
		"admin.listen":  fmt.Sprintf(`"127.0.0.1:%d"`, freePort(t)),
	}
	for _, key := range documentedKeys(t) {
		bad, ok := badValues[key]
		if !ok {
			t.Errorf("%s: no bad value to test it with; add one to badValues", key)
			continue
		}
		t.Run(key, func(t *testing.T) {
			var text strings.Builder
			text.WriteString("# a file with one bad value\n")
			for k, v := range base {
				if k != key {
					fmt.Fprintf(&text, "%s = %s\n", k, v)
				}
			}
			fmt.Fprintf(&text, "%s = %s\n", key, bad)
			path := filepath.Join(t.TempDir(), "server.toml")
			if err := os.WriteFile(path, []byte(text.String()), 0o600); err != nil {
				t.Fatal(err)
			}
			line := fmt.Sprintf("line %d", strings.Count(text.String(), "\n"))
			_, checkErr, code := runBin(t, "-check", "-config", path)
			if code != 2 || !strings.Contains(checkErr, key) || !strings.Contains(checkErr, line) {
				t.Fatalf("-check: exit %d, %q; want exit 2 naming %s and %s", code, checkErr, key, line)
			}
			startErr, code := startBriefly(t, path)
			if code != 2 || startErr != checkErr {
				t.Fatalf("start-up: exit %d, %q; -check said %q", code, startErr, checkErr)
			}
		})
	}
}

// startBriefly runs icehub on path; one that is still running after 5 s started, which a
// bad file must not: it is killed and reported as exit -1.
func startBriefly(t *testing.T, path string) (stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "-config", path)
	var e strings.Builder
	cmd.Stderr = &e
	err := cmd.Run()
	if ctx.Err() != nil {
		return e.String(), -1
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return e.String(), ee.ExitCode()
	}
	return e.String(), 0
}
