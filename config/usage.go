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

// validateUsage checks that usage.file can be a file: not a directory, in a directory that
// exists. (Whether icehub may write there shows at start, which then fails naming the file.)
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
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return keyErr(data, "usage.file", "%v", err)
	}
	dir := filepath.Dir(p)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return keyErr(data, "usage.file", "directory %q does not exist", dir)
	}
	return nil
}
