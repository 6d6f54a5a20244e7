package signal

import (
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// batchBufs holds the writer's batch buffers between bursts.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

const (
	maxPooledBuf   = 64 << 10
	maxFrameHeader = 10 // a server frame's header: no mask, 64-bit length at most
)

// writeLoop writes everything queued and returns when the queue is empty; kill makes it send
// the close frame and close the socket. Gorilla frames every message (WriteMessage,
// WriteControl); each round's frames leave in one socket write (batchConn), and a round is
// flushed early once it holds maxPooledBuf bytes.
func (c *client) writeLoop() {
	var bp *[]byte
	defer func() {
		if bp != nil {
			batchBufs.Put(bp)
		}
	}()
	for {
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			c.finish()
			return
		}
		q, ping, pongDue, pong := c.queue, c.pingDue, c.pongDue, c.pong
		if len(q) == 0 && !ping && !pongDue {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.queue, c.pingDue, c.pongDue, c.pong = nil, false, false, nil
		c.mu.Unlock()

		if bp == nil {
			bp = batchBufs.Get().(*[]byte)
		}
		deadline := c.armDeadline()
		c.out.begin(*bp)
		var err error
		if pongDue {
			err = c.conn.WriteControl(websocket.PongMessage, pong, deadline)
		}
		if ping && err == nil {
			err = c.conn.WriteControl(websocket.PingMessage, nil, deadline)
		}
		round := 0 // bytes this round holds, counting each frame's header at its largest
		for i, f := range q {
			if err != nil {
				break
			}
			if round > 0 && round+len(f) > maxPooledBuf {
				if *bp, err = c.out.flush(); err != nil {
					break
				}
				c.out.begin(*bp)
				round = 0
			}
			err = c.conn.WriteMessage(websocket.TextMessage, f)
			round += len(f) + maxFrameHeader
			q[i] = nil
		}
		b, ferr := c.out.flush()
		if err == nil {
			err = ferr
		}
		if cap(b) <= maxPooledBuf {
			*bp = b
		}
		if err != nil {
			c.kill(0, "", endLost)
			continue
		}
		if cap(q) <= 16 {
			c.mu.Lock()
			if c.spare == nil && !c.closing {
				c.spare = q[:0]
			}
			c.mu.Unlock()
		}
	}
}

// armDeadline moves the write deadline writeWait ahead, but only when it was last moved
// over a second ago (a timer update per frame is measurable), so it is 9–10 s away; it
// returns the deadline in force.
func (c *client) armDeadline() time.Time {
	if now := time.Now(); now.Sub(c.writeArmed) > time.Second {
		c.writeArmed = now
		_ = c.conn.SetWriteDeadline(now.Add(writeWait))
	}
	return c.writeArmed.Add(writeWait)
}

// finish is the last writer's end: stop the timers, send the close frame if there is one
// and close the socket.
func (c *client) finish() {
	c.mu.Lock()
	if c.pingT != nil {
		c.pingT.Stop()
		c.refreshT.Stop()
	}
	c.mu.Unlock()
	if c.why == endShutdown {
		// A stopping node parks the session (in a cluster, in Redis) before it tells the
		// client to go: a client that reconnects to another node at once finds the session
		// parked, with what reached this node meanwhile, instead of racing the park (the
		// other node's claim winning and those frames being lost). The reader has stopped
		// already; the park is one store call, and the socket is cut at closeGrace anyway.
		t := time.NewTimer(closeGrace * 3 / 4)
		select {
		case <-c.readerDone:
		case <-t.C:
		}
		t.Stop()
	}
	if c.closeCode != 0 {
		msg := websocket.FormatCloseMessage(c.closeCode, c.closeReason)
		_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
	}
	_ = c.conn.Close()
	close(c.writerDone)
}
