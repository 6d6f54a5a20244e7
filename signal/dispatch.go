package signal

import (
	"errors"
	"time"
)

// maxEcho bounds how much of a client's own input is echoed back in error frames.
const maxEcho = 64

// welcome builds the connection's first frame: its session's id, credentials and resume
// token (empty: resume is off or the store could not save it).
func (c *client) welcome(token string, resumed bool, rooms []string) []byte {
	servers, cred, err := c.h.iceServers(c.sess.turnUser, c.host)
	if err != nil {
		c.h.log.Error("minting credentials", "peer", c.id, "err", err)
	}
	c.credExpires.Store(cred.Expires.UnixNano())
	if rooms == nil {
		rooms = []string{}
	}
	var window int64
	if token != "" {
		window = int64(c.pol.resumeWindow / time.Second)
	}
	return mustJSON(welcomeFrame{
		Type: "welcome", ID: c.id, ICEServers: servers, TTL: c.h.ttlSeconds(),
		Resume: token, ResumeWindow: window, Resumed: resumed, Rooms: rooms,
	})
}

// iceFrame mints fresh credentials for this peer and records when they expire.
func (c *client) iceFrame() ([]byte, error) {
	servers, cred, err := c.h.iceServers(c.sess.turnUser, c.host)
	if err != nil {
		c.h.log.Error("minting credentials", "peer", c.id, "err", err)
		return nil, err
	}
	c.credExpires.Store(cred.Expires.UnixNano())
	return mustJSON(iceServersFrame{Type: "ice-servers", ICEServers: servers, TTL: c.h.ttlSeconds()}), nil
}

func (c *client) fail(code, msg, room, request string) {
	c.h.metrics.errors.WithLabelValues(code).Inc()
	if len(request) > maxEcho {
		request = request[:maxEcho]
	}
	if !validRoom(room) {
		room = ""
	}
	c.enqueue(mustJSON(errorFrame{Type: "error", Code: code, Message: msg, Room: room, Request: request}))
}

func (c *client) handle(data []byte) {
	f, err := decodeFrame(data)
	if err != nil {
		c.fail(CodeBadJSON, "frame is not a JSON object: "+err.Error(), "", "")
		return
	}
	switch f.Type {
	case "join":
		c.join(f)
	case "leave":
		c.leave(f)
	case "message":
		c.message(f)
	case "ice-servers":
		if fr, err := c.iceFrame(); err == nil {
			c.enqueue(fr)
		} else {
			c.fail(CodeInternal, "cannot mint credentials", "", f.Type)
		}
	case "":
		c.fail(CodeUnknownType, "frame has no type", "", "")
	default:
		c.fail(CodeUnknownType, "unknown frame type; want join, leave, message or ice-servers", "", f.Type)
	}
}

func (c *client) storeErr(err error, room, request string) {
	if errors.Is(err, ErrUnavailable) {
		c.fail(CodeClusterUnavailable, "room store unavailable; try again", room, request)
		return
	}
	c.h.log.Error("room store", "peer", c.id, "room", room, "op", request, "err", err)
	c.fail(CodeInternal, "internal error", room, request)
}

func (c *client) join(f inFrame) {
	if !validRoom(f.Room) {
		c.fail(CodeBadRoom, "room must be 1-64 characters of A-Z a-z 0-9 _ . -", "", f.Type)
		return
	}
	s := c.sess
	if _, ok := s.rooms[f.Room]; ok {
		c.fail(CodeAlreadyJoined, "already in this room", f.Room, f.Type)
		return
	}
	sig := c.h.pol.Load().sig
	if len(s.rooms) >= sig.MaxRoomsPerConn {
		c.fail(CodeTooManyRooms, "this connection is in too many rooms", f.Room, f.Type)
		return
	}
	peers, err := c.h.rooms.Join(c.ctx, f.Room, c.id, sig.MaxPeersPerRoom, s.deliver)
	switch {
	case errors.Is(err, ErrRoomFull):
		c.enqueue(mustJSON(peerFrame{Type: "full", Room: f.Room}))
		return
	case err != nil:
		c.storeErr(err, f.Room, f.Type)
		return
	}
	s.rooms[f.Room] = struct{}{}
	if peers == nil {
		peers = []string{}
	}
	c.enqueue(mustJSON(joinedFrame{Type: "joined", Room: f.Room, ID: c.id, Peers: peers}))
	// Announce to exactly the members "joined" listed. Publishing to the room instead would
	// also reach a peer that joined in between, which has this one in its own "joined"
	// already and would hear of it twice.
	ev := mustJSON(peerFrame{Type: "peer-joined", Room: f.Room, ID: c.id})
	for _, id := range peers {
		if err := c.h.rooms.Publish(c.ctx, f.Room, c.id, id, ev); err != nil && !errors.Is(err, ErrNoPeer) {
			c.h.log.Warn("announcing join", "peer", c.id, "room", f.Room, "err", err)
			return
		}
	}
}

func (c *client) leave(f inFrame) {
	if !validRoom(f.Room) {
		c.fail(CodeBadRoom, "room must be 1-64 characters of A-Z a-z 0-9 _ . -", "", f.Type)
		return
	}
	if _, ok := c.sess.rooms[f.Room]; !ok {
		c.fail(CodeNotMember, "not in this room", f.Room, f.Type)
		return
	}
	c.h.leaveRoom(c.ctx, c.sess, f.Room)
	c.enqueue(mustJSON(peerFrame{Type: "left", Room: f.Room}))
}

func (c *client) message(f inFrame) {
	if !validRoom(f.Room) {
		c.fail(CodeBadRoom, "room must be 1-64 characters of A-Z a-z 0-9 _ . -", "", f.Type)
		return
	}
	if _, ok := c.sess.rooms[f.Room]; !ok {
		c.fail(CodeNotMember, "join the room before sending to it", f.Room, f.Type)
		return
	}
	if !hasData(f.Data) {
		c.fail(CodeBadData, "message needs a data field", f.Room, f.Type)
		return
	}
	if f.To == c.id || len(f.To) > maxEcho {
		c.fail(CodeBadTarget, "to must be another member of the room", f.Room, f.Type)
		return
	}
	err := c.h.rooms.Publish(c.ctx, f.Room, c.id, f.To, messageFrame(f.Room, c.id, f.Data))
	switch {
	case errors.Is(err, ErrNoPeer):
		c.fail(CodeBadTarget, "to is not a member of the room", f.Room, f.Type)
	case err != nil:
		c.storeErr(err, f.Room, f.Type)
	default:
		c.h.metrics.messages.Inc()
	}
}
