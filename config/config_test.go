package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestShippedServerTOMLIsTheDefault(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "server.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(cfg, want) {
		t.Fatalf("server.toml differs from Default():\n got %+v\nwant %+v", cfg, want)
	}
}

func TestParseValues(t *testing.T) {
	cfg, err := Parse([]byte(`
[turn]
listen = ["127.0.0.1:3478", "[::1]:3478"]
relay_ports = "40000-40100"
allow_peers = ["127.0.0.1", "10.0.0.0/8"]
public_ip = "203.0.113.7"
[auth]
secrets = ["0123456789", "abcdefghij"]
ttl = "90m"
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.TURN.Listen; len(got) != 2 || got[1] != "[::1]:3478" {
		t.Fatalf("listen = %v", got)
	}
	if cfg.TURN.RelayPorts != (PortRange{40000, 40100}) || cfg.TURN.RelayPorts.Size() != 101 {
		t.Fatalf("relay_ports = %+v", cfg.TURN.RelayPorts)
	}
	if p := cfg.TURN.AllowPeers[0].String(); p != "127.0.0.1/32" {
		t.Fatalf("bare address became %s", p)
	}
	if cfg.Auth.TTL.Duration != 90*time.Minute {
		t.Fatalf("ttl = %v", cfg.Auth.TTL)
	}
	if cfg.TURN.Offload != "off" || len(cfg.TURN.OffloadInterfaces) != 0 {
		t.Fatalf("offload defaults: %q %v", cfg.TURN.Offload, cfg.TURN.OffloadInterfaces)
	}
	// Untouched keys keep their defaults.
	if cfg.Signal.Listen != "0.0.0.0:8080" || cfg.TURN.MaxAllocations != 10000 {
		t.Fatalf("defaults lost: %+v", cfg.Signal)
	}
}

func TestBadInputNamesKeyAndLine(t *testing.T) {
	cases := []struct {
		name, toml, key string
		line            int
	}{
		{"unknown key", "[turn]\nrealm = \"x\"\nlisten_port = 3478\n", "turn.listen_port", 3},
		{"unknown table", "[turnn]\nrealm = \"x\"\n", "turnn", 1},
		{"wrong type", "[turn]\n\nmax_allocations = \"many\"\n", "turn.max_allocations", 3},
		{"bad cidr", "[turn]\nallow_peers = [\"10.0.0.0/33\"]\n", "turn.allow_peers", 2},
		{"inverted ports", "[turn]\nrelay_ports = \"60000-50000\"\n", "turn.relay_ports", 2},
		{"ttl zero", "[auth]\nttl = \"0s\"\n", "auth.ttl", 2},
		{"ttl negative", "[auth]\n# rotate daily\nttl = \"-1h\"\n", "auth.ttl", 3},
		{"ttl not a duration", "[auth]\nttl = \"12\"\n", "auth.ttl", 2},
		{"listen without port", "[turn]\nlisten = \"0.0.0.0\"\n", "turn.listen", 2},
		{"listen hostname", "[signal]\nlisten = \"example.org:80\"\n", "signal.listen", 2},
		{"bad public ip", "[turn]\npublic_ip = \"1.2.3\"\n", "turn.public_ip", 2},
		{"short secret", "[auth]\nsecrets = [\"abc\"]\n", "auth.secrets", 2},
		{"gc percent negative", "[server]\ngc_percent = -1\n", "server.gc_percent", 2},
		{"bad log level", "[log]\nlevel = \"loud\"\n", "log.level", 2},
		{"tls without cert", "[turn]\ntls_listen = \"0.0.0.0:5349\"\n", "turn.tls_listen", 2},
		{"bad ice url", "[signal]\nice_urls = [\"http://x\"]\n", "signal.ice_urls", 2},
		{"room size zero", "[signal]\nmax_peers_per_room = 0\n", "signal.max_peers_per_room", 2},
		{"resume window negative", "[signal]\nresume_window = \"-1s\"\n", "signal.resume_window", 2},
		{"origin not a url", "[signal]\nallowed_origins = [\"not a url at all\"]\n", "signal.allowed_origins", 2},
		{"origin with path", "[signal]\npublic_origins = [\"https://x.example/app\"]\n", "signal.public_origins", 2},
		{"idle timeout zero", "[signal]\nidle_timeout = \"0s\"\n", "signal.idle_timeout", 2},
		{"read timeout short", "[signal]\nread_timeout = \"10ms\"\n", "signal.read_timeout", 2},
		{"resume buffer zero", "[signal]\nresume_buffer = 0\n", "signal.resume_buffer", 2},
		{"redis url", "[cluster]\nredis_url = \"localhost:6379\"\n", "cluster.redis_url", 2},
		{"dotted key", "turn.relay_ports = \"1-0\"\n", "turn.relay_ports", 1},
		{"unknown offload", "[turn]\noffload = \"ebpf\"\n", "turn.offload", 2},
		{"xdp on a wildcard listener", "[turn]\nlisten = \"0.0.0.0:3478\"\n\noffload = \"xdp\"\n", "turn.offload", 4},
		{"xdp with a wildcard relay_ip", "[turn]\nlisten = \"198.51.100.1:3478\"\nrelay_ip = \"0.0.0.0\"\noffload = \"xdp\"\n", "turn.relay_ip", 3},
		{"bad offload interface", "[turn]\noffload_interfaces = [\"eth0\", \"a/b\"]\n", "turn.offload_interfaces", 2},
		{"usage file in a missing directory", "[usage]\n\nfile = \"/nonexistent-icehub-dir/usage.jsonl\"\n", "usage.file", 3},
		{"usage file is a directory", "[usage]\nfile = \"/\"\n", "usage.file", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.toml))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.key) {
				t.Errorf("%q does not name key %s", msg, tc.key)
			}
			if want := "line " + strconv.Itoa(tc.line) + ":"; !strings.Contains(msg, want) {
				t.Errorf("%q does not name %s", msg, want)
			}
		})
	}
}

func TestSyntaxErrorNamesLine(t *testing.T) {
	_, err := Parse([]byte("[turn]\nrealm = \"unterminated\n"))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	seed, _ := os.ReadFile(filepath.Join("..", "server.toml"))
	f.Add(seed)
	f.Add([]byte("[turn]\nlisten = [\"[::1]:1\", 3]\n"))
	f.Add([]byte("turn.relay_ports = \"5-\"\n[auth]\nttl=\"1h\""))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		// Anything accepted must satisfy the invariants the rest of icehub relies on.
		if cfg.Auth.TTL.Duration <= 0 || cfg.TURN.RelayPorts.Min > cfg.TURN.RelayPorts.Max || len(cfg.TURN.Listen) == 0 {
			t.Fatalf("accepted invalid config: %+v", cfg)
		}
	})
}

// A missing file is still recognisable as one through the error Load returns.
func TestLoadKeepsTheCause(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.toml"))
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file: %v; want both ErrInvalid and os.ErrNotExist", err)
	}
}

func TestOffloadAccepted(t *testing.T) {
	// A wildcard listen address next to a concrete one is fine: only the concrete one's
	// clients are offloaded.
	cfg, err := Parse([]byte(`
[turn]
listen = ["198.51.100.1:3478", "[::]:3478"]
offload = "xdp"
offload_interfaces = ["eth0", "ens3f1"]
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TURN.Offload != "xdp" || len(cfg.TURN.OffloadInterfaces) != 2 || cfg.TURN.OffloadInterfaces[1] != "ens3f1" {
		t.Fatalf("offload %q interfaces %v", cfg.TURN.Offload, cfg.TURN.OffloadInterfaces)
	}
}

func TestUsageFileMustBeWritable(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "usage.jsonl")
	if _, err := Parse([]byte("[usage]\nfile = " + strconv.Quote(ok) + "\n")); err != nil {
		t.Fatalf("a new file in a writable directory: %v", err)
	}
	if err := os.WriteFile(ok, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse([]byte("[usage]\nfile = " + strconv.Quote(ok) + "\n")); err != nil {
		t.Fatalf("an existing writable file: %v", err)
	}
	if os.Geteuid() == 0 {
		t.Skip("root may write anywhere: the read-only cases need another user")
	}
	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	_, err := Parse([]byte("[usage]\nfile = " + strconv.Quote(filepath.Join(ro, "usage.jsonl")) + "\n"))
	if err == nil || !strings.Contains(err.Error(), "usage.file") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("a file in a read-only directory: %v", err)
	}
	if err := os.Chmod(ok, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse([]byte("[usage]\nfile = " + strconv.Quote(ok) + "\n")); err == nil {
		t.Fatal("a read-only file accepted")
	}
}
