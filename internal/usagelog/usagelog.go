// Package usagelog appends usage records — one JSON object per line, one line per ended TURN
// allocation — to a file, for per-user accounting.
//
// Safety over speed: records are queued (never blocking the caller, which is the relay's
// teardown path; a full queue drops and counts) and written by one goroutine, whole lines
// per write(2) on an O_APPEND file, so a reader or logrotate never sees half a line from us.
// Reopen (SIGHUP) writes what was queued before to the old file, then switches; Close writes
// everything queued, syncs and closes.
package usagelog

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Record is one ended allocation as written.
type Record struct {
	User            string    `json:"user"`
	Client          string    `json:"client"`
	Transport       string    `json:"transport"` // udp, tcp or tls
	Relay           string    `json:"relay"`
	RelayTransport  string    `json:"relay_transport"` // udp, or tcp (RFC 6062)
	Start           time.Time `json:"start"`
	End             time.Time `json:"end"`
	DurationMS      int64     `json:"duration_ms"`
	BytesToPeer     uint64    `json:"bytes_to_peer"`
	BytesToClient   uint64    `json:"bytes_to_client"`
	PacketsToPeer   uint64    `json:"packets_to_peer"`
	PacketsToClient uint64    `json:"packets_to_client"`
	Reason          string    `json:"reason"`
}

// DefaultQueue is how many records may wait for the writer before new ones are dropped.
const DefaultQueue = 4096

// maxBatch bounds the bytes of whole lines gathered into one write.
const maxBatch = 64 << 10

// switchWait bounds how long Reopen waits for the writer to take the new file (a write
// stuck on a dead disk must not hold up the signal loop for good).
const switchWait = 5 * time.Second

// Config is what New needs.
type Config struct {
	Path       string // the file to append to; empty: off (records are discarded)
	Queue      int    // 0: DefaultQueue
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: counted but not exported
}

// Writer appends records to the current file.
type Writer struct {
	log *slog.Logger
	q   chan Record
	ctl chan swap
	on  atomic.Bool // a file is open: records are worth queueing
	// mu: Write holds it shared while queueing, Close exclusively, so no record is queued
	// after Close has told the writer to drain.
	mu     sync.RWMutex
	closed bool

	written, dropped, errs prometheus.Counter
}

// swap asks the writer goroutine to finish the queued records, close its file and go on
// with f (nil: discard), or with stop end after syncing; it answers on ack.
type swap struct {
	f    *os.File
	stop bool
	ack  chan error
}

// New opens cfg.Path (when set) and starts the writer.
func New(cfg Config) (*Writer, error) {
	w := &Writer{
		log: cfg.Logger, q: make(chan Record, cmp.Or(max(cfg.Queue, 0), DefaultQueue)), ctl: make(chan swap),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_usage_records_written_total", Help: "Usage records written to usage.file.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_usage_records_dropped_total", Help: "Usage records dropped: the writer's queue was full or it had stopped.",
		}),
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_usage_write_errors_total", Help: "Failed writes to usage.file (each may lose the records of one batch).",
		}),
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.written, w.dropped, w.errs} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	f, err := open(cfg.Path)
	if err != nil {
		return nil, err
	}
	w.on.Store(f != nil)
	go w.run(f)
	return w, nil
}

// open opens path for appending, creating it; "" is no file.
func open(path string) (*os.File, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("usage.file: %w", err)
	}
	return f, nil
}

// Write queues r without blocking; when the queue is full (or the writer closed) r is
// dropped and counted in icehub_usage_records_dropped_total.
func (w *Writer) Write(r Record) {
	if !w.on.Load() {
		return
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.dropped.Inc()
		return
	}
	select {
	case w.q <- r:
	default:
		w.dropped.Inc()
	}
}

// PrepareReopen opens path ("" for off) without changing anything, so a reload can fail
// before it commits. commit makes the writer finish the records queued so far in the old
// file, close it and go on in the new one; abort closes the unused new file.
func (w *Writer) PrepareReopen(path string) (commit func() error, abort func(), err error) {
	f, err := open(path)
	if err != nil {
		return nil, nil, err
	}
	commit = func() error {
		w.mu.RLock()
		defer w.mu.RUnlock()
		if w.closed {
			closeFile(f)
			return errors.New("usagelog: closed")
		}
		ack := make(chan error, 1)
		select {
		case w.ctl <- swap{f: f, ack: ack}:
		case <-time.After(switchWait):
			closeFile(f)
			return errStuck
		}
		w.on.Store(f != nil)
		return wait(ack)
	}
	abort = func() { closeFile(f) }
	return commit, abort, nil
}

// Reopen switches to path now: what logrotate's postrotate (SIGHUP) needs.
func (w *Writer) Reopen(path string) error {
	commit, _, err := w.PrepareReopen(path)
	if err != nil {
		return err
	}
	return commit()
}

// Close writes every queued record, syncs and closes the file. Records written after
// Close are dropped (and counted).
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	ack := make(chan error, 1)
	select {
	case w.ctl <- swap{stop: true, ack: ack}:
	case <-time.After(switchWait):
		return errStuck
	}
	return wait(ack)
}

// errStuck: the writer goroutine has been in one write for switchWait (a dead disk).
var errStuck = errors.New("usagelog: the writer is stuck in a write; queued records may be lost")

// wait returns what the writer acknowledged, or errStuck.
func wait(ack chan error) error {
	select {
	case err := <-ack:
		return err
	case <-time.After(switchWait):
		return errStuck
	}
}

func closeFile(f *os.File) {
	if f != nil {
		_ = f.Close()
	}
}
