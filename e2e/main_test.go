//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binEnv names a prebuilt icehub binary to test instead of building this tree's, e.g. the
// one installed on a host: ICEHUB_E2E_BIN=/usr/local/bin/icehub deploy/natlab/run.sh.
const binEnv = "ICEHUB_E2E_BIN"

// icehubBinary builds the icehub binary once per test run, on first use, so `go test -short`
// (where every lab test skips) does not pay for the build.
func icehubBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(binEnv); p != "" {
		return p
	}
	binOnce.Do(func() {
		_, here, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(here))
		if binDir, binErr = os.MkdirTemp("", "icehub-e2e"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "icehub")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("building icehub: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}
