//go:build unix

package usagelog

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"icehub/internal/metrictest"
)

// A file whose writes block (here a FIFO nobody reads: think of a stuck disk) must not block
// Write, which runs on the relay's teardown path: past the queue, records are dropped and counted.
func TestFullQueueDropsInsteadOfBlocking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	// Hold the read end open without reading, so the writer's open succeeds and its writes
	// block once the pipe buffer is full.
	rd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	w, reg := newWriter(t, path, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 5000 { // ~1.3 MB of lines: far past the pipe buffer and the queue
			w.Write(rec(string(rune('a' + i%26))))
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Write blocked behind a stuck file")
	}
	if v := metrictest.Value(t, reg, "icehub_usage_records_dropped_total", nil); v == 0 {
		t.Fatal("no drop counted although the writer was stuck")
	}
	rd.Close() // the blocked write now fails (EPIPE) and Close can finish
}
