package usagelog

import (
	"bytes"
	"encoding/json"
	"os"
	"time"
)

// errorLogEvery bounds how often a failing file is logged (each failed batch is counted).
const errorLogEvery = 10 * time.Second

// run is the writer goroutine: the only one that touches the file.
func (w *Writer) run(f *os.File) {
	var buf []byte
	var lastLog time.Time
	for {
		select {
		case r := <-w.q:
			buf = w.writeBatch(f, buf[:0], r, &lastLog)
		case s := <-w.ctl:
			// Records queued before the switch belong in the file they were queued for.
			for len(w.q) > 0 {
				buf = w.writeBatch(f, buf[:0], <-w.q, &lastLog)
			}
			var err error
			if f != nil {
				if s.stop {
					err = f.Sync()
				}
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if s.stop {
				s.ack <- err
				return
			}
			f = s.f
			s.ack <- err
		}
	}
}

// writeBatch encodes r and whatever else is queued (up to maxBatch bytes) as whole lines
// and appends them with one write. It returns buf for reuse.
func (w *Writer) writeBatch(f *os.File, buf []byte, r Record, lastLog *time.Time) []byte {
	n := 0
	for {
		buf = appendLine(buf, r)
		n++
		if len(buf) >= maxBatch || len(w.q) == 0 {
			break
		}
		r = <-w.q
	}
	if f == nil { // switched off while these were queued
		w.dropped.Add(float64(n))
		return buf
	}
	m, err := f.Write(buf)
	if err == nil {
		w.written.Add(float64(n))
		return buf
	}
	// A short write (disk full) leaves a fragment: end it, so the next batch starts a line
	// of its own and only this batch's tail is lost.
	whole := bytes.Count(buf[:m], []byte{'\n'})
	if m > 0 && buf[m-1] != '\n' {
		_, _ = f.Write([]byte{'\n'})
	}
	w.written.Add(float64(whole))
	w.dropped.Add(float64(n - whole))
	w.errs.Inc()
	if now := time.Now(); now.Sub(*lastLog) >= errorLogEvery {
		*lastLog = now
		w.log.Error("usage records not written", "file", f.Name(), "records", n-whole, "err", err)
	}
	return buf
}

// appendLine appends r as one JSON line. encoding/json escapes control characters, so a
// user name cannot break the line.
func appendLine(buf []byte, r Record) []byte {
	b, err := json.Marshal(r)
	if err != nil { // cannot happen for this struct; keep the line count right anyway
		b = []byte(`{"error":"unencodable record"}`)
	}
	buf = append(buf, b...)
	return append(buf, '\n')
}
