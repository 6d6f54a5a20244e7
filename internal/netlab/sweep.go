//go:build linux

package netlab

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// labName matches the namespaces a lab makes: Prefix, the owner's pid, the lab's number.
var labName = regexp.MustCompile(`^` + regexp.QuoteMeta(Prefix) + `(\d+)-\d+-[a-z0-9-]+$`)

// Sweep deletes the namespaces of labs whose owner process is gone (a test binary that
// crashed or was killed before its cleanup ran), with whatever still runs inside them, and
// returns their names. Namespaces of live labs and every other namespace are left alone;
// since a lab puts nothing outside its namespaces, deleting them removes all it made.
func Sweep(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return nil, err
	}
	var swept []string
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line) // "name (id: 3)"
		if len(f) == 0 {
			continue
		}
		m := labName.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || alive(pid) {
			continue
		}
		if err := deleteNS(f[0]); err != nil {
			errs = append(errs, err)
			continue
		}
		swept = append(swept, f[0])
	}
	return swept, errors.Join(errs...)
}

// alive reports whether process pid exists (EPERM: it exists but is not ours).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
