package signal

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// batchConn is the net.Conn gorilla/websocket writes to. Every frame is still gorilla's
// (WriteMessage, WriteControl); batchConn only decides when the bytes reach the socket:
// while the hub's writer drains its queue (begin … flush) they collect in one buffer that
// leaves in one write, otherwise each write goes straight through. Gorilla writes the close
// frames it answers protocol errors and peer closes with from the reader goroutine, each in
// one Write: mu keeps those whole and in order with a flush.
type batchConn struct {
	net.Conn

	mu       sync.Mutex
	batching bool
	buf      []byte
	deadline time.Time // the write deadline last set on the socket
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batching {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

// SetWriteDeadline passes a deadline on only when it changed: gorilla sets it before every
// frame, and a timer update per frame is measurable, while the hub moves it at most once a
// second.
func (b *batchConn) SetWriteDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.Equal(b.deadline) {
		return nil
	}
	b.deadline = t
	return b.Conn.SetWriteDeadline(t)
}

// begin starts collecting writes into buf.
func (b *batchConn) begin(buf []byte) {
	b.mu.Lock()
	b.batching, b.buf = true, buf[:0]
	b.mu.Unlock()
}

// flush writes what was collected in one write and stops collecting; it returns the buffer
// for reuse.
func (b *batchConn) flush() ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	buf := b.buf
	b.batching, b.buf = false, nil
	var err error
	if len(buf) > 0 {
		_, err = b.Conn.Write(buf)
	}
	return buf[:0], err
}

// hijackWrap hands gorilla's Upgrade a batchConn in place of the hijacked connection.
type hijackWrap struct {
	http.ResponseWriter
	conn *batchConn
}

func (h *hijackWrap) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.conn = &batchConn{Conn: c}
	return h.conn, brw, nil
}
