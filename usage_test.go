package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"icehub/internal/echopeer"
)

const usageSecret = "usage-test-secret"

// usageLine is a line of usage.file as an accounting script would read it.
type usageLine struct {
	User            string    `json:"user"`
	Client          string    `json:"client"`
	Transport       string    `json:"transport"`
	Relay           string    `json:"relay"`
	RelayTransport  string    `json:"relay_transport"`
	Start           time.Time `json:"start"`
	End             time.Time `json:"end"`
	DurationMS      int64     `json:"duration_ms"`
	BytesToPeer     uint64    `json:"bytes_to_peer"`
	BytesToClient   uint64    `json:"bytes_to_client"`
	PacketsToPeer   uint64    `json:"packets_to_peer"`
	PacketsToClient uint64    `json:"packets_to_client"`
	Reason          string    `json:"reason"`
}

// usageLines parses the file; a line that is not one whole record fails the test.
func usageLines(t *testing.T, path string) []usageLine {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []usageLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l usageLine
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil || l.Reason == "" || l.User == "" {
			t.Fatalf("%s: torn or unexpected line %q: %v", path, sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// waitUsage waits until the file holds n records and returns them.
func waitUsage(t *testing.T, path string, n int, within time.Duration) []usageLine {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := usageLines(t, path)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d records after %s, want %d: %+v", path, len(got), within, n, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLogCount waits until s appears n times in the process's log.
func (p *proc) waitLogCount(t *testing.T, s string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for strings.Count(p.Logs(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q %d times:\n%s", s, n, p.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func usageProc(t *testing.T) (*proc, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "usage.jsonl")
	p := startIcehub(t, fmt.Sprintf("auth.secrets = [%q]\nturn.allow_peers = [\"127.0.0.1/32\"]\nusage.file = %q\n", usageSecret, path))
	return p, path
}

// TestUsageRecordsAndRotation: a relayed allocation ended by the client (Refresh 0) is one
// line whose byte counts are what the peer saw; after logrotate's rename and SIGHUP, records
// go to the new file and none is lost.
func TestUsageRecordsAndRotation(t *testing.T) {
	p, path := usageProc(t)
	peer := echopeer.Start(t)
	cr := mint(t, usageSecret, "alice", time.Hour)
	r, err := allocate(t, p.turn, cr.Username, cr.Password)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := r.echo(peer.Addr, []byte(strings.Repeat("x", 100*(i+1)))); err != nil {
			t.Fatal(err)
		}
	}
	r.conn.Close() // Refresh with LIFETIME 0
	got := waitUsage(t, path, 1, 5*time.Second)[0]
	if got.User != "alice" || got.Reason != "refresh-0" || got.Transport != "udp" || got.RelayTransport != "udp" ||
		got.Relay != r.conn.LocalAddr().String() || !strings.HasPrefix(got.Client, "127.0.0.1:") {
		t.Fatalf("record %+v (relay %s)", got, r.conn.LocalAddr())
	}
	if got.BytesToPeer != peer.RxBytes.Load() || got.PacketsToPeer != peer.RxPackets.Load() || got.BytesToClient != peer.TxBytes.Load() ||
		got.BytesToPeer < 5500 {
		t.Fatalf("record counts to_peer %d B / %d pkts, to_client %d B; the peer received %d B / %d pkts and sent %d B",
			got.BytesToPeer, got.PacketsToPeer, got.BytesToClient, peer.RxBytes.Load(), peer.RxPackets.Load(), peer.TxBytes.Load())
	}
	if got.End.Before(got.Start) || got.DurationMS != got.End.Sub(got.Start).Milliseconds() {
		t.Fatalf("start %v end %v duration %d ms", got.Start, got.End, got.DurationMS)
	}

	// logrotate: rename, then an allocation ends (its line follows the open file), then SIGHUP.
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	bob := mint(t, usageSecret, "bob", time.Hour)
	b, err := allocate(t, p.turn, bob.Username, bob.Password)
	if err != nil {
		t.Fatal(err)
	}
	b.conn.Close()
	waitUsage(t, rotated, 2, 5*time.Second)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLogCount(t, "reloaded", 1, 5*time.Second)
	carol := mint(t, usageSecret, "carol", time.Hour)
	c, err := allocate(t, p.turn, carol.Username, carol.Password)
	if err != nil {
		t.Fatal(err)
	}
	c.conn.Close()
	if l := waitUsage(t, path, 1, 5*time.Second); len(l) != 1 || l[0].User != "carol" {
		t.Fatalf("new file after SIGHUP: %+v", l)
	}
	if l := usageLines(t, rotated); len(l) != 2 || l[1].User != "bob" {
		t.Fatalf("rotated file: %+v", l)
	}

	// A reload may move the file.
	moved := filepath.Join(filepath.Dir(path), "moved.jsonl")
	cfg, err := os.ReadFile(p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	good := strings.Replace(string(cfg), path, moved, 1)
	if err := os.WriteFile(p.cfg, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLogCount(t, "reloaded", 2, 5*time.Second)
	endOne(t, p, "dave")
	if l := waitUsage(t, moved, 1, 5*time.Second); l[0].User != "dave" {
		t.Fatalf("moved file: %+v", l)
	}
	// logrotate signals whatever state the config is in: a refused reload still reopens.
	if err := os.WriteFile(p.cfg, []byte(good+"turn.relay_ports = \"9-1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(moved, moved+".1"); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLogCount(t, "reload refused", 1, 5*time.Second)
	endOne(t, p, "erin")
	if l := waitUsage(t, moved, 1, 5*time.Second); l[0].User != "erin" {
		t.Fatalf("file after a refused reload: %+v", l)
	}
}

// endOne allocates as user and deallocates at once.
func endOne(t *testing.T, p *proc, user string) {
	t.Helper()
	cr := mint(t, usageSecret, user, time.Hour)
	r, err := allocate(t, p.turn, cr.Username, cr.Password)
	if err != nil {
		t.Fatal(err)
	}
	r.conn.Close()
}

// TestUsageRecordsOnSIGTERM: allocations alive at SIGTERM get their records, reason shutdown,
// and a TCP client that went away gets client-gone.
func TestUsageRecordsOnSIGTERM(t *testing.T) {
	p, path := usageProc(t)
	gone := mint(t, usageSecret, "gone", time.Hour)
	tc, conn := tcpTURNClient(t, p.turn, gone)
	if _, err := tc.Allocate(); err != nil {
		t.Fatal(err)
	}
	tc.Close()
	conn.Close()
	if l := waitUsage(t, path, 1, 5*time.Second); l[0].Reason != "client-gone" || l[0].Transport != "tcp" {
		t.Fatalf("record %+v, want client-gone over tcp", l[0])
	}
	for i := range 3 {
		cr := mint(t, usageSecret, fmt.Sprintf("live%d", i), time.Hour)
		if _, err := allocate(t, p.turn, cr.Username, cr.Password); err != nil {
			t.Fatal(err)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("no exit")
	}
	lines := usageLines(t, path)
	if len(lines) != 4 {
		t.Fatalf("%d records after exit, want 4: %+v", len(lines), lines)
	}
	for _, l := range lines[1:] {
		if l.Reason != "shutdown" || !strings.HasPrefix(l.User, "live") {
			t.Fatalf("record %+v, want reason shutdown", l)
		}
	}
}

// TestUsageRecordsUnderLoadAndRotation: many allocations end while the file is rotated
// again and again; every one of them is one whole line in one of the files.
func TestUsageRecordsUnderLoadAndRotation(t *testing.T) {
	p, path := usageProc(t)
	const clients, rounds, rotations = 8, 6, 5
	var wg sync.WaitGroup
	errs := make(chan error, clients*rounds)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cr := mint(t, usageSecret, fmt.Sprintf("load%d", c), time.Hour)
			for range rounds {
				r, err := allocate(t, p.turn, cr.Username, cr.Password)
				if err != nil {
					errs <- err
					return
				}
				r.conn.Close()
				r.client.Close()
			}
		}()
	}
	var files []string
	for i := range rotations {
		time.Sleep(50 * time.Millisecond)
		f := fmt.Sprintf("%s.%d", path, i)
		if err := os.Rename(path, f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		files = append(files, f)
		p.cmd.Process.Signal(syscall.SIGHUP)
		p.waitLogCount(t, "reloaded", i+1, 5*time.Second)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.exited
	seen := 0
	for _, f := range append(files, path) {
		seen += len(usageLines(t, f))
	}
	if seen != clients*rounds {
		t.Fatalf("%d records over %d files, want %d", seen, len(files)+1, clients*rounds)
	}
}
