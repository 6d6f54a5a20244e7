//go:build unix

package config

import "golang.org/x/sys/unix"

// writable reports whether this process may write path (a file) or create files in it (a
// directory), without writing anything: access(2) also sees read-only file systems.
func writable(path string, dir bool) error {
	mode := uint32(unix.W_OK)
	if dir {
		mode |= unix.X_OK
	}
	return unix.Access(path, mode)
}
