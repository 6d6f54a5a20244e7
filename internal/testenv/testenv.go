// Package testenv lets tests find what they need on the machine they run on: tools on PATH,
// root, network namespaces. Where something is missing the test skips with one line saying
// what to install, so `go test -short ./...` passes on a laptop with only Go; CI sets
// ICEHUB_TEST_REQUIRE_ALL=1 (see .ci/run) and every such skip becomes a failure instead, so
// nothing is silently left out there.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// RequireAllEnv is the environment variable that turns a missing prerequisite into a failure.
const RequireAllEnv = "ICEHUB_TEST_REQUIRE_ALL"

// RequireAll reports whether missing prerequisites fail tests instead of skipping them.
func RequireAll() bool { return os.Getenv(RequireAllEnv) == "1" }

// Skip skips t with the reason, or fails it when RequireAll is set.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if RequireAll() {
		t.Fatalf("%s (%s=1: prerequisites are required)", msg, RequireAllEnv)
	}
	t.Skip(msg)
}

// Tool returns the path of command name on PATH, or skips: "needs name: install pkg".
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Skip(t, "needs %s on PATH: install %s (apt-get install %s)", name, pkg, pkg)
	}
	return p
}

// Chromium returns the path of a Chromium (or Chrome) binary on PATH, or skips.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	Skip(t, "needs chromium on PATH: install chromium (apt-get install chromium)")
	return ""
}

// Root skips unless the test runs as root.
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root (network namespaces, iptables or resource limits): run as root")
	}
}

var (
	netnsOnce sync.Once
	netnsErr  error
)

// Netns skips unless this machine lets the test create network namespaces: root, `ip` from
// iproute2, and a kernel that allows `ip netns add`.
func Netns(t testing.TB) {
	t.Helper()
	Root(t)
	Tool(t, "ip", "iproute2")
	netnsOnce.Do(func() {
		name := fmt.Sprintf("icehub-probe-%d", os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			netnsErr = fmt.Errorf("ip netns add: %v: %s", err, out)
			return
		}
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	if netnsErr != nil {
		Skip(t, "needs network namespaces: %v", netnsErr)
	}
}

// Long skips a test that takes long or loads the machine (floods, soaks, browsers) under -short.
func Long(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("long test: skipped under -short")
	}
}
