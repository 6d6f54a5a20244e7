package signal

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"icehub/internal/metrictest"
)

func TestJoinAnnouncesToOthers(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.MaxPeersPerRoom = 3 })
	a, b := e.connect(t), e.connect(t)
	ja := a.join("r1")
	if ja.Room != "r1" || ja.ID != a.id || len(ja.Peers) != 0 {
		t.Fatalf("first joined = %+v", ja)
	}
	jb := b.join("r1")
	if !slices.Equal(jb.Peers, []string{a.id}) {
		t.Fatalf("second joined peers = %v, want [%s]", jb.Peers, a.id)
	}
	if f := a.expect("peer-joined"); f.ID != b.id || f.Room != "r1" {
		t.Fatalf("peer-joined = %+v", f)
	}
	if got := metrictest.Value(t, e.reg, "icehub_signal_rooms", nil); got != 1 {
		t.Fatalf("rooms gauge = %v", got)
	}
	if got := metrictest.Value(t, e.reg, "icehub_signal_connections", nil); got != 2 {
		t.Fatalf("connections gauge = %v", got)
	}
}

func TestFullAtCapacity(t *testing.T) {
	e := newEnv(t, time.Hour, nil) // default capacity 2
	a, b, c := e.connect(t), e.connect(t), e.connect(t)
	a.join("cap")
	b.join("cap")
	c.send(map[string]string{"type": "join", "room": "cap"})
	if f := c.expect("full"); f.Room != "cap" {
		t.Fatalf("full = %+v", f)
	}
	// A full room answer leaves the connection usable and in no room.
	c.send(map[string]any{"type": "message", "room": "cap", "data": 1})
	c.expectError(CodeNotMember)
	a.expect("peer-joined")
	a.send(map[string]any{"type": "message", "room": "cap", "data": "hi"})
	if f := b.expect("message"); f.From != a.id {
		t.Fatalf("message = %+v", f)
	}
}

func TestLeaveAndDisconnectAnnounce(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.MaxPeersPerRoom = 3 })
	a, b, c := e.connect(t), e.connect(t), e.connect(t)
	a.join("r")
	b.join("r")
	c.join("r")
	a.expect("peer-joined")
	a.expect("peer-joined")
	b.expect("peer-joined")

	b.send(map[string]string{"type": "leave", "room": "r"})
	if f := b.expect("left"); f.Room != "r" {
		t.Fatalf("left = %+v", f)
	}
	for _, p := range []*peer{a, c} {
		if f := p.expect("peer-left"); f.ID != b.id || f.Room != "r" {
			t.Fatalf("peer-left = %+v", f)
		}
	}
	// A client that closes its WebSocket (a close frame: it means to leave) is gone at once;
	// one whose connection merely drops is kept for a resume (resume_test.go).
	c.bye()
	if f := a.expect("peer-left"); f.ID != c.id {
		t.Fatalf("peer-left after close = %+v", f)
	}
	// b may rejoin after leaving.
	if jb := b.join("r"); !slices.Equal(jb.Peers, []string{a.id}) {
		t.Fatalf("rejoin peers = %v", jb.Peers)
	}
}

func TestMessageRouting(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.MaxPeersPerRoom = 3 })
	a, b, c := e.connect(t), e.connect(t), e.connect(t)
	other := e.connect(t) // in another room: must never hear r's traffic
	a.join("r")
	b.join("r")
	c.join("r")
	other.join("elsewhere")
	a.expect("peer-joined")
	a.expect("peer-joined")
	b.expect("peer-joined")

	data := `{"sdp":"v=0\r\n","nested":[1,[2,[3]]],"u":"\u00e9"}`
	a.sendRaw(`{"type":"message","room":"r","data":` + data + `}`)
	for _, p := range []*peer{b, c} {
		f := p.expect("message")
		if f.From != a.id || f.Room != "r" || string(f.Data) != data {
			t.Fatalf("broadcast = %+v data %s", f, f.Data)
		}
	}
	a.sendRaw(`{"type":"message","room":"r","to":"` + c.id + `","data":{"only":"c"}}`)
	if f := c.expect("message"); string(f.Data) != `{"only":"c"}` {
		t.Fatalf("direct = %s", f.Data)
	}
	// The sender hears nothing back, b nothing of the direct message, other nothing at all.
	a.send(map[string]any{"type": "ice-servers"})
	a.expect("ice-servers")
	b.send(map[string]any{"type": "ice-servers"})
	b.expect("ice-servers")
	other.expectSilence(200 * time.Millisecond)
	if got := metrictest.Value(t, e.reg, "icehub_signal_messages_total", nil); got != 2 {
		t.Fatalf("messages_total = %v", got)
	}
}

func TestErrorCodes(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.MaxRoomsPerConn = 2 })
	p := e.connect(t)
	q := e.connect(t)
	p.join("mine")
	q.join("theirs")
	long := make([]byte, 65)
	for i := range long {
		long[i] = 'a'
	}
	cases := []struct {
		name, frame, code, request, room string
	}{
		{"not json", `not json`, CodeBadJSON, "", ""},
		{"array", `[1,2]`, CodeBadJSON, "", ""},
		{"type not a string", `{"type":5}`, CodeBadJSON, "", ""},
		{"truncated", `{"type":"join","room":"x"`, CodeBadJSON, "", ""},
		{"no type", `{"room":"x"}`, CodeUnknownType, "", ""},
		{"unknown type", `{"type":"dance"}`, CodeUnknownType, "dance", ""},
		{"empty room", `{"type":"join","room":""}`, CodeBadRoom, "join", ""},
		{"room too long", `{"type":"join","room":"` + string(long) + `"}`, CodeBadRoom, "join", ""},
		{"room bad chars", `{"type":"join","room":"a/b"}`, CodeBadRoom, "join", ""},
		{"room space", `{"type":"message","room":"a b","data":1}`, CodeBadRoom, "message", ""},
		{"leave bad room", `{"type":"leave","room":"*"}`, CodeBadRoom, "leave", ""},
		{"already joined", `{"type":"join","room":"mine"}`, CodeAlreadyJoined, "join", "mine"},
		{"leave not member", `{"type":"leave","room":"theirs"}`, CodeNotMember, "leave", "theirs"},
		{"message not member", `{"type":"message","room":"theirs","data":1}`, CodeNotMember, "message", "theirs"},
		{"message no data", `{"type":"message","room":"mine"}`, CodeBadData, "message", "mine"},
		{"message null data", `{"type":"message","room":"mine","data":null}`, CodeBadData, "message", "mine"},
		{"to not in room", `{"type":"message","room":"mine","to":"` + q.id + `","data":1}`, CodeBadTarget, "message", "mine"},
		{"to self", `{"type":"message","room":"mine","to":"` + p.id + `","data":1}`, CodeBadTarget, "message", "mine"},
		{"to unknown", `{"type":"message","room":"mine","to":"nobody","data":1}`, CodeBadTarget, "message", "mine"},
		{"invalid utf8", "{\"type\":\"message\",\"room\":\"mine\",\"data\":\"\xff\"}", CodeBadJSON, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p.t = t
			p.sendRaw(tc.frame)
			f := p.expectError(tc.code)
			if f.Request != tc.request || f.Room != tc.room || f.Message == "" {
				t.Fatalf("error frame %+v, want request %q room %q", f, tc.request, tc.room)
			}
		})
	}
	p.t = t

	p.join("second")
	p.send(map[string]string{"type": "join", "room": "third"})
	p.expectError(CodeTooManyRooms)
	if err := p.conn.WriteMessage(2 /* binary */, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	p.expectError(CodeBinaryUnsupported)
	// After all that the connection still works.
	p.send(map[string]string{"type": "leave", "room": "second"})
	p.expect("left")
	if got := metrictest.Value(t, e.reg, "icehub_signal_errors_total", map[string]string{"code": CodeBadRoom}); got != 5 {
		t.Fatalf("errors_total{bad-room} = %v", got)
	}
}

func TestDeepNestingIsHarmless(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	a, b := e.connect(t), e.connect(t)
	a.join("deep")
	b.join("deep")
	a.expect("peer-joined")
	// 30000 levels fits the frame limit but exceeds encoding/json's nesting limit: refused.
	deep := make([]byte, 0, 60100)
	deep = append(deep, `{"type":"message","room":"deep","data":`...)
	for range 30000 {
		deep = append(deep, '[')
	}
	for range 30000 {
		deep = append(deep, ']')
	}
	deep = append(deep, '}')
	a.sendRaw(string(deep))
	a.expectError(CodeBadJSON)
	// 5000 levels is valid JSON and relayed untouched.
	var ok []byte
	for range 5000 {
		ok = append(ok, '[')
	}
	for range 5000 {
		ok = append(ok, ']')
	}
	a.sendRaw(`{"type":"message","room":"deep","data":` + string(ok) + `}`)
	if f := b.expect("message"); string(f.Data) != string(ok) {
		t.Fatalf("deep data mangled")
	}
}

// holdRooms holds the first peer-joined announcement until released, so a test can let
// another peer join while a join is still being announced.
type holdRooms struct {
	*MemoryRooms
	once       sync.Once
	held, free chan struct{}
}

func (h *holdRooms) Publish(ctx context.Context, room, from, to string, frame []byte) error {
	if bytes.Contains(frame, []byte(`"peer-joined"`)) {
		first := false
		h.once.Do(func() { first = true })
		if first {
			close(h.held)
			<-h.free
		}
	}
	return h.MemoryRooms.Publish(ctx, room, from, to, frame)
}

// A peer that joins while an earlier join is still being announced has that peer in its
// own "joined" list and must not also get a "peer-joined" for it.
func TestLateJoinerHearsOfEachPeerOnce(t *testing.T) {
	rooms := &holdRooms{MemoryRooms: NewMemoryRooms(), held: make(chan struct{}), free: make(chan struct{})}
	var release sync.Once
	free := func() { release.Do(func() { close(rooms.free) }) }
	sig := DefaultSettings()
	sig.MaxPeersPerRoom = 3
	e := newEnvConfig(t, Config{Settings: sig, Ring: newTestRing(t), TTL: time.Hour, ICEURLs: testICE, Rooms: rooms})
	t.Cleanup(free) // before the hub's shutdown, which waits for the held announcement
	a, b, c := e.connect(t), e.connect(t), e.connect(t)
	a.join("r")
	b.join("r")
	select {
	case <-rooms.held: // an announcement is in flight
	case <-time.After(5 * time.Second):
		t.Fatal("no join was announced")
	}
	if jc := c.join("r"); !slices.Equal(jc.Peers, sortedIDs(a.id, b.id)) {
		t.Fatalf("c joined with peers %v, want a and b", jc.Peers)
	}
	free()
	if f := b.expect("peer-joined"); f.ID != c.id {
		t.Fatalf("b heard of %s joining, want c (%s)", f.ID, c.id)
	}
	c.expectSilence(300 * time.Millisecond)
}

func sortedIDs(ids ...string) []string {
	slices.Sort(ids)
	return ids
}
