package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Usage configures usage records: one JSON line per ended TURN allocation.
type Usage struct {
	// File is appended to; empty: no records. Reopened on SIGHUP (logrotate), and a reload
	// may change it.
	File string `toml:"file"`
}

// validateUsage checks that icehub can append to usage.file: not a directory, writable, or
// creatable in a directory that exists. (-check may run as another user than the service:
// the check is for the user running it.)
func (c *Config) validateUsage(data []byte) error {
	p := c.Usage.File
	if p == "" {
		return nil
	}
	st, err := os.Stat(p)
	switch {
	case err == nil && st.IsDir():
		return keyErr(data, "usage.file", "%q is a directory", p)
	case err == nil:
		if err := writable(p, false); err != nil {
			return keyErr(data, "usage.file", "%q is not writable: %v", p, err)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return keyErr(data, "usage.file", "%v", err)
	}
	dir := filepath.Dir(p)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return keyErr(data, "usage.file", "directory %q does not exist", dir)
	}
	if err := writable(dir, true); err != nil {
		return keyErr(data, "usage.file", "cannot create files in %q: %v", dir, err)
	}
	return nil
}
