package signal

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// WebSocket close codes the hub sends.
const (
	closeGoingAway = websocket.CloseGoingAway
	closePolicy    = websocket.ClosePolicyViolation
	closeInternal  = websocket.CloseInternalServerErr
)

const (
	writeWait   = 10 * time.Second
	closeGrace  = time.Second      // how long a close frame may take before the socket is cut
	floodWindow = 10 * time.Second // rate-limited frames are counted over this window
	floodFactor = 4                // more than floodFactor×burst drops in the window closes the conn
	leaveWait   = 5 * time.Second  // room cleanup after a disconnect
)

// client is one WebSocket connection. The reader goroutine owns rooms and the flood
// counters; the writer goroutine owns every write except the close frame gorilla sends on
// its own for oversized frames.
type client struct {
	h       *Hub
	id      string
	ip      string
	host    string // the Host the client dialled, for HostPlaceholder
	conn    *websocket.Conn
	pol     *policy // snapshot at connect: frame size, queue length, ping period
	send    chan []byte
	limiter *rate.Limiter

	ctx         context.Context
	cancel      context.CancelFunc
	closeOnce   sync.Once
	closeCode   int // written before cancel, read after ctx.Done
	closeReason string
	writerDone  chan struct{}

	credExpires atomic.Int64 // unix nanoseconds when the last minted credentials expire

	rooms       map[string]struct{}
	dropStart   time.Time
	drops       int
	lastRateErr time.Time
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
	ip := clientIP(r)
	if ok, status := h.admit(ip, pol.sig.MaxConnsPerIP); !ok {
		http.Error(w, http.StatusText(status), status)
		return
	}
	up := websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
		CheckOrigin:     func(*http.Request) bool { return true }, // checked above, with our rules
	}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		h.release(ip) // Upgrade has already answered the request.
		return
	}
	c := &client{
		h:          h,
		id:         newPeerID(),
		ip:         ip,
		host:       r.Host,
		conn:       conn,
		pol:        pol,
		send:       make(chan []byte, pol.sendQueue),
		limiter:    rate.NewLimiter(pol.msgRate, pol.msgBurst),
		writerDone: make(chan struct{}),
		rooms:      make(map[string]struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(h.ctx)
	h.addClient(c)
	h.log.Debug("ws connected", "peer", c.id, "ip", ip)
	c.welcome()
	go c.writeLoop()
	c.readLoop()
	c.cleanup()
}

// kill ends the connection once, with a close frame when code is not zero. It returns
// whether this call was the one that ended it.
func (c *client) kill(code int, reason string) bool {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.closeCode, c.closeReason = code, reason
		c.cancel()
		// A writer stalled on a dead peer only sees the cancel at its write deadline;
		// cutting the socket frees it, and the reader, now.
		time.AfterFunc(closeGrace, func() { _ = c.conn.Close() })
	})
	return first
}

// enqueue queues a frame without ever blocking: a client whose queue is full is too slow to
// keep, and waiting for it would stall whoever is sending to its room.
func (c *client) enqueue(frame []byte) {
	if c.ctx.Err() != nil {
		return
	}
	select {
	case c.send <- frame:
	default:
		if c.kill(closePolicy, "slow consumer: send queue full") {
			c.h.metrics.droppedSlow.Inc()
			c.h.log.Info("dropping slow peer", "peer", c.id, "ip", c.ip)
		}
	}
}

func (c *client) writeLoop() {
	defer close(c.writerDone)
	ping := time.NewTicker(c.pol.pingPeriod)
	defer ping.Stop()
	refresh := time.NewTimer(c.refreshIn())
	defer refresh.Stop()
	for {
		select {
		case <-c.ctx.Done():
			if c.closeCode != 0 {
				msg := websocket.FormatCloseMessage(c.closeCode, c.closeReason)
				_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
			}
			_ = c.conn.Close()
			return
		case f := <-c.send:
			if c.write(websocket.TextMessage, f) != nil {
				c.kill(0, "")
			}
		case <-ping.C:
			if c.write(websocket.PingMessage, nil) != nil {
				c.kill(0, "")
			}
		case <-refresh.C:
			// A requested ice-servers frame may have renewed the credentials meanwhile.
			if d := c.refreshIn(); d > 0 {
				refresh.Reset(d)
				continue
			}
			if f, err := c.iceFrame(); err == nil && c.write(websocket.TextMessage, f) != nil {
				c.kill(0, "")
			}
			refresh.Reset(max(c.refreshIn(), time.Second))
		}
	}
}

func (c *client) write(kind int, data []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
	return c.conn.WriteMessage(kind, data)
}

// refreshIn is the time until fresh credentials are due: a fifth of the TTL before the
// last ones expire, so a client always has time to renew its RTCPeerConnection config.
func (c *client) refreshIn() time.Duration {
	exp := time.Unix(0, c.credExpires.Load())
	return time.Until(exp.Add(-c.h.ttl / 5))
}

func (c *client) readLoop() {
	pongWait := 2*c.pol.pingPeriod + time.Second // one missed pong is forgiven
	c.conn.SetReadLimit(c.pol.maxFrame)
	_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(pongWait))
	})
	for c.ctx.Err() == nil {
		kind, data, err := c.conn.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				// gorilla has already sent close 1009.
				c.h.metrics.errors.WithLabelValues(CodeFrameTooLarge).Inc()
			}
			c.kill(0, "")
			return
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
		if !c.allowFrame() {
			continue
		}
		if kind != websocket.TextMessage {
			c.fail(CodeBinaryUnsupported, "only JSON text frames are understood", "", "")
			continue
		}
		c.handleSafely(data)
	}
}

// handleSafely is the last line of defence: a bug triggered by one frame closes that one
// connection with 1011 instead of taking the process down.
func (c *client) handleSafely(data []byte) {
	defer func() {
		if r := recover(); r != nil {
			c.h.log.Error("panic handling frame", "peer", c.id, "panic", r)
			c.h.metrics.errors.WithLabelValues(CodeInternal).Inc()
			c.kill(closeInternal, "internal error")
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
		c.kill(closePolicy, "message flood")
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

// cleanup runs after the reader exits: leave every room so the others hear peer-left, then
// wait for the writer before releasing the connection slot.
func (c *client) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), leaveWait)
	defer cancel()
	for room := range c.rooms {
		c.leaveRoom(ctx, room)
	}
	<-c.writerDone
	c.h.removeClient(c)
	c.h.release(c.ip)
	c.h.log.Debug("ws disconnected", "peer", c.id, "ip", c.ip)
}
