package signal

import (
	"context"
	"errors"
	"time"
)

// storeWait bounds each call to the resume store on a connection's path.
const storeWait = 2 * time.Second

// endReason says why a connection ended, which decides whether its session is parked.
type endReason uint8

const (
	endLost     endReason = iota // read or write failed, or the peer stopped answering pings
	endClosed                    // the client sent a close frame: it meant to leave
	endPolicy                    // the hub closed it for abuse or slowness
	endShutdown                  // the hub is shutting down
	endTakeover                  // a resume took its session over
)

// closeReplaced tells a connection that a resume of its session replaced it: its token is
// spent, so a client must not reconnect with it.
const closeReplaced = 4000

// openSession gives a new connection its session: the one its resume token names when that
// token is current, else a new one. It never fails: a bad token only means a new session.
func (h *Hub) openSession(c *client, token string) {
	if token != "" && c.pol.resumeWindow > 0 {
		if h.resume(c, token) {
			h.metrics.resumes.WithLabelValues("resumed").Inc()
			return
		}
		h.metrics.resumes.WithLabelValues("refused").Inc()
	}
	// The TURN user is a second random identity that only this session's own iceServers
	// carry: the peer id is shown to every room member, and credentials minted for it would
	// let any of them spend this session's per-user allocation quota.
	s := &session{h: h, id: newPeerID(), turnUser: newPeerID(), ip: c.ip, rooms: make(map[string]struct{})}
	c.sess, c.id = s, s.id
	var token2 string
	if c.pol.resumeWindow > 0 {
		var rec resumeToken
		token2, rec = newResumeToken()
		ctx, cancel := context.WithTimeout(c.ctx, storeWait)
		err := h.store.save(ctx, s.id, rec, s.turnUser)
		cancel()
		if err != nil {
			// The session works; it just cannot be resumed. Never log the token.
			h.log.Warn("saving session for resume", "peer", s.id, "err", err)
			token2 = ""
		} else {
			s.tok = rec
		}
	}
	h.mu.Lock()
	h.sessions[s.id] = s
	h.mu.Unlock()
	s.mu.Lock()
	c.enqueue(c.welcome(token2, false, nil))
	s.conn, s.last = c, c
	s.mu.Unlock()
}

// resume claims the session token names for c and attaches c to it: welcome with the same
// id, then what the session missed, in order.
func (h *Hub) resume(c *client, token string) bool {
	tok, ok := parseResumeToken(token)
	if !ok {
		return false
	}
	next, nextRec := newResumeToken()
	var s *session
	created := false
	ctx, cancel := context.WithTimeout(c.ctx, storeWait)
	cl, err := h.store.claim(ctx, tok, nextRec, func(id string) Deliver {
		s, created = h.sessionFor(id)
		return s.deliver
	})
	cancel()
	if err != nil {
		if s != nil && created {
			h.mu.Lock()
			if h.sessions[s.id] == s {
				delete(h.sessions, s.id)
			}
			h.mu.Unlock()
		}
		if !errors.Is(err, errNoSession) {
			h.log.Warn("resuming session", "err", err)
		}
		return false
	}

	// Detach whatever had the session: a connection the network lost without either end
	// noticing yet (the usual case after a network change), or the parked state.
	s.mu.Lock()
	old, prev := s.conn, s.last
	s.conn, s.state, s.tok = nil, sessResuming, nextRec
	s.mu.Unlock()
	h.unpark(s)
	if old != nil {
		old.kill(closeReplaced, "session resumed by another connection", endTakeover)
	}
	if prev != nil {
		// The rooms are the previous reader's until it has finished ending.
		<-prev.readerDone
		s.mu.Lock()
		s.takeUnsentLocked(prev)
		s.mu.Unlock()
	}
	if cl.rooms != nil {
		s.rooms = make(map[string]struct{}, len(cl.rooms))
		for _, r := range cl.rooms {
			s.rooms[r] = struct{}{}
		}
	}
	if cl.turnUser != "" {
		s.turnUser = cl.turnUser
	}
	c.sess, c.id = s, s.id

	s.mu.Lock()
	c.enqueue(c.welcome(next, true, s.roomList()))
	c.enqueueReplay(cl.missed)
	c.enqueueReplay(s.pending)
	overflow := s.overflow
	s.pending, s.pendingB, s.overflow = nil, 0, false
	s.conn, s.last, s.state, s.ip = c, c, sessLive, c.ip
	s.mu.Unlock()
	h.log.Debug("session resumed", "peer", s.id, "ip", c.ip, "missed", len(cl.missed))
	if overflow {
		// More came in while it was being attached than a parked session may hold.
		c.kill(closePolicy, "missed too many messages", endPolicy)
	}
	return true
}

// sessionFor returns this node's session object for id, creating one for a session that
// lived on another node.
func (h *Hub) sessionFor(id string) (s *session, created bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s = h.sessions[id]; s != nil {
		return s, false
	}
	s = &session{h: h, id: id, state: sessResuming, rooms: make(map[string]struct{})}
	h.sessions[id] = s
	return s, true
}

// endConn runs when c's reader has stopped: its session is parked for a resume, ended (its
// rooms hear peer-left), or left alone when a resume has taken it over.
func (h *Hub) endConn(c *client) {
	s := c.sess
	if s == nil {
		return
	}
	pol := h.pol.Load()
	s.mu.Lock()
	if s.conn != c {
		s.mu.Unlock()
		return
	}
	s.conn = nil
	s.takeUnsentLocked(c)
	tok, ip := s.tok, s.ip
	park := pol.resumeWindow > 0 && tok.sel != "" && !s.overflow &&
		(c.why == endLost || c.why == endShutdown && h.store.shared())
	s.mu.Unlock()
	if park && h.park(s, pol, tok, ip) {
		return
	}
	h.endSession(s, tok)
}

// park keeps s for pol.resumeWindow. It reports false when s must end instead: a bound is
// reached or the store refused.
func (h *Hub) park(s *session, pol *policy, tok resumeToken, ip string) bool {
	h.mu.Lock()
	perIP := pol.sig.MaxConnsPerIP
	if h.parked >= h.parkCap || perIP > 0 && h.parkedIP[ip] >= perIP {
		h.mu.Unlock()
		h.metrics.resumes.WithLabelValues("not-parked").Inc()
		return false
	}
	h.parked++
	h.parkedIP[ip]++
	h.metrics.parked.Inc()
	s.parkedHere, s.parkedIP = true, ip
	s.timer = time.AfterFunc(pol.resumeWindow, func() { h.expire(s, tok) })
	h.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), storeWait)
	defer cancel()
	// s.mu is held across the store call so that frames for s wait instead of overtaking
	// pending, which becomes the head of the parked buffer.
	s.mu.Lock()
	err := h.store.park(ctx, s.id, tok, s.roomList(), time.Now().Add(pol.resumeWindow), s.pending, pol.resumeBuffer)
	switch {
	case err == nil:
		s.state = sessParked
		s.pending, s.pendingB = nil, 0
	case errors.Is(err, errNotCurrent):
		// A resume claimed it meanwhile and is attaching its new connection.
	}
	s.mu.Unlock()
	if err != nil {
		h.unpark(s)
		if !errors.Is(err, errOverflow) && !errors.Is(err, errNotCurrent) {
			h.log.Warn("parking session", "peer", s.id, "err", err)
		}
		return errors.Is(err, errNotCurrent)
	}
	h.log.Debug("session parked", "peer", s.id, "ip", ip, "window", pol.resumeWindow)
	return true
}

// unpark undoes park's accounting and stops its timer; it is a no-op for a session not parked here.
func (h *Hub) unpark(s *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !s.parkedHere {
		return
	}
	s.parkedHere = false
	s.timer.Stop()
	h.parked--
	h.metrics.parked.Dec()
	if h.parkedIP[s.parkedIP]--; h.parkedIP[s.parkedIP] <= 0 {
		delete(h.parkedIP, s.parkedIP)
	}
}

// expire ends a parked session whose window has passed, unless it was resumed meanwhile.
func (h *Hub) expire(s *session, tok resumeToken) {
	ctx, cancel := context.WithTimeout(context.Background(), leaveWait)
	defer cancel()
	left, err := h.store.end(ctx, s.id, tok, true)
	s.mu.Lock()
	gone := s.state == sessParked && s.tok == tok
	if gone {
		s.state = sessEnded
	}
	s.mu.Unlock()
	if !gone {
		return // resumed here; the resume has unparked it
	}
	h.unpark(s)
	h.forget(s)
	if err != nil && !errors.Is(err, errNotCurrent) {
		h.log.Warn("ending parked session", "peer", s.id, "err", err)
	}
	if err == nil { // counted before the others hear of it: they may try the token at once
		h.metrics.resumes.WithLabelValues("expired").Inc()
		h.log.Debug("parked session expired", "peer", s.id)
	}
	for _, room := range left {
		h.announceLeft(ctx, room, s.id)
	}
}

// overflowed ends a parked session whose buffer could not take another frame; the store has
// dropped it and its memberships.
func (h *Hub) overflowed(s *session, left []string) {
	s.mu.Lock()
	s.state = sessEnded
	s.mu.Unlock()
	h.unpark(s)
	h.forget(s)
	h.metrics.resumes.WithLabelValues("overflow").Inc()
	ctx, cancel := context.WithTimeout(context.Background(), leaveWait)
	defer cancel()
	for _, room := range left {
		h.announceLeft(ctx, room, s.id)
	}
}

// moved is the store telling this node that a session it had, live or parked, was resumed on
// another node with the token whose selector is sel.
func (h *Hub) moved(id, sel string) {
	h.mu.Lock()
	s := h.sessions[id]
	h.mu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.tok.sel != sel {
		s.mu.Unlock()
		return // a later token: the session came back here since
	}
	old := s.conn
	s.conn, s.state = nil, sessEnded
	s.mu.Unlock()
	h.unpark(s)
	h.forget(s)
	if old != nil {
		old.kill(closeReplaced, "session resumed by another connection", endTakeover)
	}
}

// endSession ends a session now, from its last reader: its resume record goes first (a
// resume that claimed it meanwhile keeps it, rooms and all), then it leaves its rooms, which
// hear peer-left.
func (h *Hub) endSession(s *session, tok resumeToken) {
	ctx, cancel := context.WithTimeout(context.Background(), leaveWait)
	defer cancel()
	if tok.sel != "" {
		_, err := h.store.end(ctx, s.id, tok, false)
		if errors.Is(err, errNotCurrent) {
			return
		}
		if err != nil {
			h.log.Warn("forgetting session", "peer", s.id, "err", err)
		}
	}
	s.mu.Lock()
	s.state = sessEnded
	s.mu.Unlock()
	for room := range s.rooms {
		h.leaveRoom(ctx, s, room)
	}
	h.forget(s)
}

func (h *Hub) forget(s *session) {
	h.mu.Lock()
	if h.sessions[s.id] == s {
		delete(h.sessions, s.id)
	}
	h.mu.Unlock()
}

// leaveRoom forgets the room locally even when the store fails: the session must not stay
// stuck in a room it asked to leave, and a clustered store expires stale members.
func (h *Hub) leaveRoom(ctx context.Context, s *session, room string) {
	delete(s.rooms, room)
	if err := h.rooms.Leave(ctx, room, s.id); err != nil && !errors.Is(err, ErrNotMember) {
		h.log.Warn("leaving room", "peer", s.id, "room", room, "err", err)
		return
	}
	h.announceLeft(ctx, room, s.id)
}

func (h *Hub) announceLeft(ctx context.Context, room, peer string) {
	ev := mustJSON(peerFrame{Type: "peer-left", Room: room, ID: peer})
	if err := h.rooms.Publish(ctx, room, peer, "", ev); err != nil {
		h.log.Warn("announcing leave", "peer", peer, "room", room, "err", err)
	}
}
