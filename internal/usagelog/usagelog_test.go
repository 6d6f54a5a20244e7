package usagelog

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"icehub/internal/metrictest"
)

func newWriter(t *testing.T, path string, queue int) (*Writer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w, err := New(Config{Path: path, Queue: queue, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w, reg
}

// readRecords parses every line of the files; a line that is not one whole record fails.
func readRecords(t *testing.T, paths ...string) []Record {
	t.Helper()
	var out []Record
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r Record
			dec := json.NewDecoder(strings.NewReader(sc.Text()))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&r); err != nil || r.Reason == "" {
				t.Fatalf("%s: torn or foreign line %q: %v", p, sc.Text(), err)
			}
			out = append(out, r)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func rec(user string) Record {
	now := time.Now().UTC()
	return Record{User: user, Client: "192.0.2.1:5000", Transport: "udp", Relay: "198.51.100.1:50000",
		RelayTransport: "udp", Start: now.Add(-time.Second), End: now, DurationMS: 1000,
		BytesToPeer: 100, BytesToClient: 200, PacketsToPeer: 1, PacketsToClient: 2, Reason: "refresh-0"}
}

func TestCloseWritesEverythingQueued(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.jsonl")
	w, reg := newWriter(t, path, 0)
	// A user name is attacker-chosen: newlines and quotes must not break the line.
	evil := "mallory\n{\"user\":\"forged\"}\r\u2028"
	for i := range 1000 {
		w.Write(rec(fmt.Sprint(evil, i)))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := readRecords(t, path)
	if len(got) != 1000 {
		t.Fatalf("%d records in the file, want 1000", len(got))
	}
	for i, r := range got {
		if r.User != fmt.Sprint(evil, i) || r.BytesToClient != 200 {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	if v := metrictest.Value(t, reg, "icehub_usage_records_written_total", nil); v != 1000 {
		t.Fatalf("written_total = %v", v)
	}
	w.Write(rec("late")) // after Close: dropped and counted, no panic
	if v := metrictest.Value(t, reg, "icehub_usage_records_dropped_total", nil); v != 1 {
		t.Fatalf("dropped_total = %v after a write past Close", v)
	}
}

// Writers race with logrotate-style renames and reopens: every record lands exactly once,
// in one of the files, as a whole line, or is counted as dropped.
func TestConcurrentWritersAndRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "usage.jsonl")
	w, reg := newWriter(t, path, 0)
	const writers, each, rotations = 8, 3000, 20
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				w.Write(rec(fmt.Sprintf("g%d-%d", g, i)))
			}
		}()
	}
	files := []string{}
	for i := range rotations {
		rotated := filepath.Join(dir, fmt.Sprintf("usage.jsonl.%d", i))
		if err := os.Rename(path, rotated); err != nil {
			t.Fatal(err)
		}
		files = append(files, rotated)
		if err := w.Reopen(path); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := readRecords(t, append(files, path)...)
	seen := map[string]bool{}
	for _, r := range got {
		if seen[r.User] {
			t.Fatalf("record %s written twice", r.User)
		}
		seen[r.User] = true
	}
	written := metrictest.Value(t, reg, "icehub_usage_records_written_total", nil)
	dropped := metrictest.Value(t, reg, "icehub_usage_records_dropped_total", nil)
	if int(written) != len(got) || len(got)+int(dropped) != writers*each {
		t.Fatalf("%d lines, written_total %v, dropped_total %v, want lines+dropped = %d", len(got), written, dropped, writers*each)
	}
	t.Logf("%d records in %d files, %v dropped by the bounded queue", len(got), len(files)+1, dropped)
}

func TestOffUntilReopened(t *testing.T) {
	w, reg := newWriter(t, "", 0)
	w.Write(rec("nobody")) // off: discarded, not a drop
	path := filepath.Join(t.TempDir(), "later.jsonl")
	if err := w.Reopen(path); err != nil {
		t.Fatal(err)
	}
	w.Write(rec("somebody"))
	if err := w.Reopen(""); err != nil { // back off: what was queued still lands
		t.Fatal(err)
	}
	w.Write(rec("nobody again"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readRecords(t, path); len(got) != 1 || got[0].User != "somebody" {
		t.Fatalf("records %+v", got)
	}
	if v := metrictest.Value(t, reg, "icehub_usage_records_dropped_total", nil); v != 0 {
		t.Fatalf("dropped_total = %v while off", v)
	}
}

func TestBadPathRefusedAndNothingChanges(t *testing.T) {
	if _, err := New(Config{Path: filepath.Join(t.TempDir(), "missing", "usage.jsonl")}); err == nil {
		t.Fatal("New opened a file in a missing directory")
	}
	path := filepath.Join(t.TempDir(), "usage.jsonl")
	w, _ := newWriter(t, path, 0)
	if err := w.Reopen(filepath.Join(t.TempDir(), "missing", "x")); err == nil {
		t.Fatal("Reopen into a missing directory succeeded")
	}
	w.Write(rec("still here"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readRecords(t, path); len(got) != 1 {
		t.Fatalf("records %+v: the failed reopen should have kept the old file", got)
	}
}
