package config

import (
	"strings"
	"testing"
)

func TestBitrateParsing(t *testing.T) {
	good := map[string]Bitrate{
		`""`: 0, `"400k"`: 400_000, `"400K"`: 400_000, `"2M"`: 2_000_000, `"1.5M"`: 1_500_000,
		`"1G"`: 1_000_000_000, `64000`: 64_000, `"64000"`: 64_000, `0`: 0, `" 2M "`: 2_000_000,
	}
	for in, want := range good {
		cfg, err := Parse([]byte("[turn]\nmax_bitrate = " + in + "\n"))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if cfg.TURN.MaxBitrate != want {
			t.Errorf("%s = %d, want %d", in, cfg.TURN.MaxBitrate, want)
		}
	}
	bad := []string{`"fast"`, `"2m"`, `"-1k"`, `-5`, `"1e6"`, `"k"`, `"NaN"`, `"Inf"`, `"0x10k"`, `1.5`, `"8k"`, `"20000G"`, `["1M"]`}
	for _, in := range bad {
		_, err := Parse([]byte("[turn]\n# a cap\nmax_bitrate = " + in + "\n"))
		if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "turn.max_bitrate") {
			t.Errorf("%s: error %v, want one naming turn.max_bitrate and line 3", in, err)
		}
	}
}

func TestBitrateString(t *testing.T) {
	for b, want := range map[Bitrate]string{0: "", 400_000: "400k", 2_000_000: "2M", 1_500_000: "1500k", 3_000_000_000: "3G", 16_500: "16500"} {
		if got := b.String(); got != want {
			t.Errorf("%d: %q, want %q", uint64(b), got, want)
		}
	}
}

func TestDrainAndAlternates(t *testing.T) {
	cfg, err := Parse([]byte("[server]\ndrain_timeout = \"2m\"\n[turn]\nalternate_servers = [\"203.0.113.5:3478\", \"[2001:db8::1]:3478\"]\nstun_only = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.DrainTimeout.Minutes() != 2 || !cfg.TURN.STUNOnly || len(AlternateAddrs(cfg.TURN.AlternateServers)) != 2 {
		t.Fatalf("%+v %+v", cfg.Server, cfg.TURN)
	}
	for _, bad := range []string{
		"[turn]\nalternate_servers = [\"turn.example.org:3478\"]\n",
		"[turn]\nalternate_servers = [\"203.0.113.5\"]\n",
		"[turn]\nalternate_servers = [\"0.0.0.0:3478\"]\n",
		"[turn]\nalternate_servers = [\"203.0.113.5:0\"]\n",
		"[server]\ndrain_timeout = \"-1s\"\n",
		"[server]\ndrain_timeout = \"48h\"\n",
	} {
		if _, err := Parse([]byte(bad)); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
