//go:build linux

package netlab

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// NS is one network namespace of a lab.
type NS struct {
	Name  string // the full name, as `ip netns` knows it
	Short string // the name inside the lab ("inet", "srv", "cone", ...)
}

// IP runs `ip -n NS args...`.
func (n *NS) IP(ctx context.Context, args ...string) error {
	return ipCmd(ctx, append([]string{"-n", n.Name}, args...)...)
}

// Command returns a command that runs name inside the namespace (through `ip netns exec`,
// which execs it: the process's pid is the command's own). It gets its own process group,
// so KillGroup ends a command together with any children it spawned.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return KillGroup(cmd) }
	return cmd
}

// KillGroup kills the process group of a started command made by Command.
func KillGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// Run runs name inside the namespace and returns its combined output.
func (n *NS) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w", name, strings.Join(args, " "), n.Short, err)
	}
	return string(out), nil
}

// Do runs f on an OS thread that has entered the namespace. Sockets f opens stay in the
// namespace for their whole life, so they can be used from any goroutine afterwards;
// goroutines f starts do not inherit the namespace.
func (n *NS) Do(f func() error) error {
	target, err := os.Open(filepath.Join("/run/netns", n.Name))
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked, so the runtime ends it with this goroutine instead of
			// letting other goroutines run in the lab's namespace.
			errc <- fmt.Errorf("setns back from %s: %w", n.Name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ListenPacket is net.ListenPacket inside the namespace.
func (n *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Listen is net.Listen inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// Dial is net.Dialer.DialContext inside the namespace.
func (n *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Sysctl sets a net.* sysctl of the namespace, e.g. Sysctl("net.ipv4.ip_forward", "1").
// /proc/sys/net shows the namespace of the thread that opens it, hence Do.
func (n *NS) Sysctl(key, value string) error {
	if !strings.HasPrefix(key, "net.") {
		return fmt.Errorf("netlab: sysctl %s: only net.* keys are per namespace", key)
	}
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return n.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) })
}

// Nft loads an nft ruleset (the text `nft -f` reads) into the namespace.
func (n *NS) Nft(ctx context.Context, ruleset string) error {
	cmd := n.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s\nruleset:\n%s", n.Short, err, strings.TrimSpace(string(out)), ruleset)
	}
	return nil
}
