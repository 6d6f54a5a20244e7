package signal

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// WebSocket close codes the hub sends.
const (
	closeGoingAway      = websocket.CloseGoingAway
	closeServiceRestart = websocket.CloseServiceRestart
	closePolicy         = websocket.ClosePolicyViolation
	closeInternal       = websocket.CloseInternalServerErr
)

const (
	writeWait   = 10 * time.Second
	closeGrace  = time.Second      // how long a close frame may take before the socket is cut
	floodWindow = 10 * time.Second // rate-limited frames are counted over this window
	floodFactor = 4                // more than floodFactor×burst drops in the window closes the conn
	leaveWait   = 5 * time.Second  // room cleanup after a disconnect
)

// client is one WebSocket connection, attached to a session. The reader goroutine owns the
// session's rooms while attached, and the flood counters. Every frame goes through the send
// queue and a writer goroutine that runs only while there is something to write (an idle
// connection holds one goroutine, the reader, and no write buffer); gorilla itself only
// writes the close frames it answers protocol errors and peer closes with (see batchConn).
type client struct {
	h       *Hub
	id      string   // the session's peer id, set by openSession
	sess    *session // set by openSession before the reader starts
	ip      string
	host    string // the Host the client dialled, for HostPlaceholder
	conn    *websocket.Conn
	out     *batchConn // what conn writes to: the writer flushes it once per round
	pol     *policy    // snapshot at connect: frame size, queue length, ping period
	limiter *rate.Limiter

	ctx         context.Context
	cancel      context.CancelFunc
	closeOnce   sync.Once
	closeCode   int // written before closing is set, read by the writer after it sees closing
	closeReason string
	why         endReason // why the connection ended; written once, by the first kill
	writerDone  chan struct{}
	readerDone  chan struct{} // closed once the reader has stopped and endConn has run

	mu      sync.Mutex
	queue   [][]byte // text frames waiting for the writer, at most pol.sendQueue
	spare   [][]byte // the writer's previous batch, reused so steady traffic does not allocate
	pingDue bool
	pongDue bool
	pong    []byte   // payload of the last ping to answer
	unsent  [][]byte // room frames still queued when the connection was lost, for a resume
	writing bool     // a writer goroutine is running (or the final one has been started)
	closing bool     // kill was called: nothing more is queued, the writer sends close and quits

	pingT, refreshT *time.Timer // set under mu
	writeArmed      time.Time   // when the writer last moved the write deadline; writer only

	credExpires atomic.Int64 // unix nanoseconds when the last minted credentials expire

	dropStart   time.Time
	drops       int
	lastRateErr time.Time
}

// upgrader is shared. Each connection has small buffers of its own: 1 KiB to read, and 512
// bytes for gorilla to frame into (a longer message's tail goes to the socket without a
// copy through it). A write buffer pool would save those 512 bytes per idle connection but
// costs a pool round trip and an allocation per message (bench: 3 % of the hub's CPU).
var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 512,
	CheckOrigin:     func(*http.Request) bool { return true }, // checked in serveWS, with our rules
}

func (h *Hub) serveWS(w http.ResponseWriter, r *http.Request) {
	pol := h.pol.Load()
	if !pol.originAllowed(r) {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	if !pol.keyAllowed(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="icehub"`)
		http.Error(w, "missing or wrong API key", http.StatusUnauthorized)
		return
	}
	ip := pol.clientIP(r)
	if ok, status := h.admit(ip, pol.sig.MaxConnsPerIP); !ok {
		http.Error(w, http.StatusText(status), status)
		return
	}
	hw := &hijackWrap{ResponseWriter: w}
	conn, err := upgrader.Upgrade(hw, r, nil)
	if err != nil {
		h.release(ip) // Upgrade has already answered the request.
		return
	}
	c := &client{
		h:          h,
		ip:         ip,
		host:       r.Host,
		conn:       conn,
		out:        hw.conn,
		pol:        pol,
		limiter:    rate.NewLimiter(pol.msgRate, pol.msgBurst),
		writerDone: make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(h.ctx)
	h.addClient(c)
	// The token is a credential: it is read here and handed on, never logged.
	h.openSession(c, r.URL.Query().Get("resume"))
	h.log.Debug("ws connected", "peer", c.id, "ip", ip)
	c.mu.Lock()
	if !c.closing {
		c.pingT = time.AfterFunc(pol.pingPeriod, c.pingTick)
		c.refreshT = time.AfterFunc(c.refreshIn(), c.refreshTick)
	}
	c.mu.Unlock()
	// The connection gets a fresh goroutine and net/http's one returns: its stack, the
	// request and the response buffers are released instead of living as long as the socket.
	go func() {
		c.readLoop()
		c.kill(0, "", endLost) // a no-op when something else ended it; orders c.why before endConn
		h.endConn(c)
		close(c.readerDone)
		<-c.writerDone
		h.removeClient(c)
		h.release(c.ip)
		h.log.Debug("ws disconnected", "peer", c.id, "ip", c.ip)
	}()
}

// kill ends the connection once, with a close frame when code is not zero. It returns
// whether this call was the one that ended it.
func (c *client) kill(code int, reason string, why endReason) bool {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.closeCode, c.closeReason, c.why = code, reason, why
		c.mu.Lock()
		c.closing = true
		start := !c.writing
		c.writing = true
		if why == endLost || why == endTakeover || why == endShutdown {
			c.unsent = roomFrames(c.queue)
		}
		c.queue, c.spare, c.pong = nil, nil, nil
		c.mu.Unlock()
		c.cancel()
		// The reader stops now, so the rooms hear peer-left at once; the writer has
		// closeGrace for the close frame. A writer stalled on a dead peer only sees the kill
		// at its write deadline; cutting the socket frees it.
		_ = c.conn.NetConn().SetReadDeadline(time.Now())
		time.AfterFunc(closeGrace, func() { _ = c.conn.Close() })
		if start {
			go c.writeLoop()
		}
	})
	return first
}

// enqueue queues a frame without ever blocking: a client whose queue is full is too slow to
// keep, and waiting for it would stall whoever is sending to its room. It reports false when
// the connection is closing and the frame was not queued.
func (c *client) enqueue(frame []byte) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if len(c.queue) >= c.pol.sendQueue {
		c.mu.Unlock()
		if c.kill(closePolicy, "slow consumer: send queue full", endPolicy) {
			c.h.metrics.droppedSlow.Inc()
			c.h.log.Info("dropping slow peer", "peer", c.id, "ip", c.ip)
		}
		return false
	}
	if c.queue == nil && c.spare != nil {
		c.queue, c.spare = c.spare, nil
	}
	c.queue = append(c.queue, frame)
	c.wakeLocked()
	return true
}

// enqueueReplay queues what a resumed session missed. It is bounded by the parked buffer,
// not by the send queue, which a full replay may exceed once.
func (c *client) enqueueReplay(frames [][]byte) {
	if len(frames) == 0 {
		return
	}
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.queue = append(c.queue, frames...)
	c.wakeLocked()
}

// wakeLocked starts the writer unless it runs; it unlocks c.mu.
func (c *client) wakeLocked() {
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
}

// pingTick runs every ping period from a runtime timer: no goroutine waits for it.
func (c *client) pingTick() {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.pingDue = true
	c.pingT.Reset(c.pol.pingPeriod)
	c.wakeLocked()
}

// refreshTick sends fresh credentials when the last ones are due for renewal.
func (c *client) refreshTick() {
	if c.ctx.Err() != nil {
		return
	}
	// A requested ice-servers frame may have renewed the credentials meanwhile.
	if d := c.refreshIn(); d > 0 {
		c.resetRefresh(d)
		return
	}
	if f, err := c.iceFrame(); err == nil {
		c.enqueue(f)
	}
	c.resetRefresh(max(c.refreshIn(), time.Second))
}

func (c *client) resetRefresh(d time.Duration) {
	c.mu.Lock()
	if !c.closing {
		c.refreshT.Reset(d)
	}
	c.mu.Unlock()
}

// pingHandler answers through the writer, so that it alone writes frames.
func (c *client) pingHandler(appData string) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.pongDue, c.pong = true, []byte(appData)
	c.wakeLocked()
	return nil
}

// refreshIn is the time until fresh credentials are due: a fifth of the TTL before the
// last ones expire, so a client always has time to renew its RTCPeerConnection config.
func (c *client) refreshIn() time.Duration {
	exp := time.Unix(0, c.credExpires.Load())
	return time.Until(exp.Add(-c.h.ttl / 5))
}

// readBufs holds frame buffers while a frame is handled; idle connections hold none.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func (c *client) readLoop() {
	pongWait := 2*c.pol.pingPeriod + time.Second // one missed pong is forgiven
	// The read deadline is moved at most every slack: a timer update per frame is measurable,
	// and slack stays well inside the second of grace pongWait adds.
	slack := min(pongWait/16, 250*time.Millisecond)
	c.conn.SetReadLimit(c.pol.maxFrame)
	last := time.Now()
	_ = c.conn.SetReadDeadline(last.Add(pongWait))
	extend := func() error {
		now := time.Now()
		if now.Sub(last) < slack || c.ctx.Err() != nil {
			return nil
		}
		last = now
		return c.conn.SetReadDeadline(now.Add(pongWait))
	}
	// Control frames count against messages_per_second like any other: each ping costs a
	// pong, and a flood of either is a flood.
	c.conn.SetPongHandler(func(string) error {
		if !c.allowFrame() {
			return nil
		}
		return extend()
	})
	c.conn.SetPingHandler(func(data string) error {
		if !c.allowFrame() {
			return nil
		}
		return c.pingHandler(data)
	})
	for c.ctx.Err() == nil {
		kind, r, err := c.conn.NextReader()
		var data []byte
		var bp *[]byte
		if err == nil {
			bp = readBufs.Get().(*[]byte)
			data, err = readAll(r, (*bp)[:0])
		}
		if err != nil {
			if bp != nil {
				readBufs.Put(bp)
			}
			var ce *websocket.CloseError
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				// gorilla has already sent close 1009.
				c.h.metrics.errors.WithLabelValues(CodeFrameTooLarge).Inc()
				c.kill(0, "", endPolicy)
			case errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure:
				// The client said goodbye (gorilla answered its close frame): not resumable.
				// 1006 is gorilla's name for a connection that ended without one.
				c.kill(0, "", endClosed)
			default:
				c.kill(0, "", endLost)
			}
			return
		}
		_ = extend()
		if c.allowFrame() {
			if kind != websocket.TextMessage {
				c.fail(CodeBinaryUnsupported, "only JSON text frames are understood", "", "")
			} else {
				c.handleSafely(data)
			}
		}
		if cap(data) <= maxPooledBuf {
			*bp = data[:0]
		}
		readBufs.Put(bp)
	}
}

// readAll is io.ReadAll into b.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
	}
}

// handleSafely is the last line of defence: a bug triggered by one frame closes that one
// connection with 1011 instead of taking the process down.
func (c *client) handleSafely(data []byte) {
	defer func() {
		if r := recover(); r != nil {
			c.h.log.Error("panic handling frame", "peer", c.id, "panic", r)
			c.h.metrics.errors.WithLabelValues(CodeInternal).Inc()
			c.kill(closeInternal, "internal error", endPolicy)
		}
	}()
	c.handle(data)
}

// allowFrame applies the per-connection rate limit and closes connections that keep
// flooding after being told to slow down.
func (c *client) allowFrame() bool {
	if c.limiter.Allow() {
		return true
	}
	now := time.Now()
	if now.Sub(c.dropStart) > floodWindow {
		c.dropStart, c.drops = now, 0
	}
	c.drops++
	if c.drops > floodFactor*max(c.limiter.Burst(), 1) {
		c.h.metrics.errors.WithLabelValues(CodeRateLimited).Inc()
		c.kill(closePolicy, "message flood", endPolicy)
		return false
	}
	// One error a second is enough to tell the client; one per dropped frame would let a
	// flooder make us write as fast as it reads.
	if now.Sub(c.lastRateErr) >= time.Second {
		c.lastRateErr = now
		c.fail(CodeRateLimited, "too many frames; slow down", "", "")
	}
	return false
}
