package signal

import (
	"net"
	"sync"
	"testing"
	"time"
)

// recordConn records each Write the socket would get.
type recordConn struct {
	net.Conn
	mu        sync.Mutex
	writes    [][]byte
	deadlines int
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, append([]byte(nil), p...))
	return len(p), nil
}

func (r *recordConn) SetWriteDeadline(time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deadlines++
	return nil
}

// What gorilla writes during a round leaves in one socket write, in order; outside a round
// (gorilla answering a peer's close) it goes straight through; an unchanged deadline is not
// set again.
func TestBatchConnOneWritePerRound(t *testing.T) {
	rc := &recordConn{}
	b := &batchConn{Conn: rc}
	if _, err := b.Write([]byte("direct")); err != nil {
		t.Fatal(err)
	}
	b.begin(make([]byte, 0, 4))
	for _, p := range []string{"frame1|", "frame2|", "frame3"} {
		if _, err := b.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if len(rc.writes) != 1 {
		t.Fatalf("%d socket writes during the round", len(rc.writes))
	}
	if _, err := b.flush(); err != nil {
		t.Fatal(err)
	}
	if len(rc.writes) != 2 || string(rc.writes[1]) != "frame1|frame2|frame3" {
		t.Fatalf("socket writes %q", rc.writes)
	}
	d := time.Now().Add(time.Second)
	for range 3 {
		_ = b.SetWriteDeadline(d)
	}
	_ = b.SetWriteDeadline(d.Add(time.Second))
	if rc.deadlines != 2 {
		t.Fatalf("%d deadline updates for 2 distinct deadlines", rc.deadlines)
	}
}
