package turnserver

import (
	"bytes"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOffloadUnavailableRelaysInUserSpace: where the XDP program cannot be attached (here:
// an interface that does not exist; elsewhere missing privileges, an old kernel, or not
// Linux), the server says why in one line and relays in user space.
func TestOffloadUnavailableRelaysInUserSpace(t *testing.T) {
	lb := &logBuffer{}
	ts := startServer(t, func(c *Config) {
		loopbackAllowed(c)
		c.Offload = OffloadXDP
		c.OffloadInterfaces = []string{"icehub-none0"}
		c.Logger = slog.New(slog.NewTextHandler(lb, nil))
	})
	if ts.srv.offload != nil {
		t.Fatal("the offload opened on an interface that does not exist")
	}
	cr := ts.creds(t, "fallback")
	c := udpClient(t, ts.udp, cr.Username, cr.Password)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	roundTrip(t, relay, udpEcho(t), "user space relays")
	if n := strings.Count(lb.String(), "turn xdp offload off"); n != 1 {
		t.Fatalf("%d lines about the offload, want one:\n%s", n, lb.String())
	}
	if !regexp.MustCompile(`turn xdp offload off; relaying in user space.* err=.+`).MatchString(lb.String()) {
		t.Fatalf("the line does not say why:\n%s", lb.String())
	}
}

func TestOffloadConfigValue(t *testing.T) {
	cfg := baseConfig()
	cfg.Ring, cfg.Offload = nil, "ebpf"
	ts := startServer(t, nil) // for a ring
	cfg.Ring = ts.ring
	if _, err := New(cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "ebpf") {
		t.Fatalf("New with offload %q: %v, want ErrConfig naming it", cfg.Offload, err)
	}
}

// logBuffer collects a server's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitLine waits for a log line matching re and returns its submatches.
func (l *logBuffer) waitLine(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if m := rx.FindStringSubmatch(l.String()); m != nil {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no log line matches %s", re)
	return nil
}
