package signal

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"icehub/internal/metrictest"
)

// parkedNow is the parked-sessions gauge.
func (e *testEnv) parkedNow(t *testing.T) float64 {
	return metrictest.Value(t, e.reg, "icehub_signal_parked_sessions", nil)
}

// drop ends p's connection the way a network failure does (no close frame) and waits until
// the hub has parked its session.
func (e *testEnv) drop(t *testing.T, p *peer) {
	t.Helper()
	before := e.parkedNow(t)
	_ = p.conn.Close()
	eventually(t, 5*time.Second, "session parked", func() bool { return e.parkedNow(t) == before+1 })
}

func (p *peer) message(room, to string, data any) {
	p.t.Helper()
	m := map[string]any{"type": "message", "room": room, "data": data}
	if to != "" {
		m["to"] = to
	}
	p.send(m)
}

// expectMessage reads the next frame and checks it is data from `from` in room.
func (p *peer) expectMessage(room, from, data string) {
	p.t.Helper()
	f := p.expect("message")
	if f.Room != room || f.From != from || string(f.Data) != data {
		p.t.Fatalf("got message %s from %s in %s, want %s from %s in %s", f.Data, f.From, f.Room, data, from, room)
	}
}

func TestWelcomeCarriesResumeToken(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	a, b := e.connect(t), e.connect(t)
	w := a.welcome
	if len(w.Resume) != 64 || w.ResumeWindow != 30 || w.Resumed || w.Rooms == nil || len(w.Rooms) != 0 {
		t.Fatalf("welcome resume=%q window=%d resumed=%v rooms=%v; want a 64-char token, 30, false, []",
			w.Resume, w.ResumeWindow, w.Resumed, w.Rooms)
	}
	if b.welcome.Resume == w.Resume || strings.Contains(w.Resume, a.id) {
		t.Fatal("tokens are not unique per session, or contain the peer id")
	}
}

// The central promise: a dropped client comes back with the same id, its rooms, and every
// frame its rooms sent it meanwhile, in order; the others hear nothing of the gap.
func TestResumeKeepsIDRoomsAndMissedFrames(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.MaxPeersPerRoom = 3 })
	a, b := e.connect(t), e.connect(t)
	a.join("r1")
	a.join("r2")
	b.join("r1")
	a.expect("peer-joined")
	b.join("r2")
	a.expect("peer-joined")

	e.drop(t, a)
	b.message("r1", "", 1)
	b.message("r2", a.id, 2) // addressed to the parked peer: accepted, not bad-target
	b.message("r1", "", 3)
	c := e.connect(t)
	if j := c.join("r1"); !slices.Equal(j.Peers, sortedIDs(a.id, b.id)) {
		t.Fatalf("a parked peer still holds its seat: joined peers %v", j.Peers)
	}
	b.expect("peer-joined") // c

	a2 := e.resume(t, a.welcome.Resume)
	w := a2.welcome
	if w.ID != a.id || !w.Resumed || !slices.Equal(w.Rooms, []string{"r1", "r2"}) {
		t.Fatalf("resumed welcome id=%s resumed=%v rooms=%v; want %s true [r1 r2]", w.ID, w.Resumed, w.Rooms, a.id)
	}
	if len(w.Resume) != 64 || w.Resume == a.welcome.Resume || len(w.ICEServers) == 0 {
		t.Fatalf("resumed welcome must carry a fresh token and credentials: %+v", w)
	}
	if turnUser(t, e.ring, w.ICEServers) != turnUser(t, e.ring, a.welcome.ICEServers) {
		t.Fatal("the resumed session's credentials are for another TURN user: its quota would split")
	}
	a2.expectMessage("r1", b.id, "1")
	a2.expectMessage("r2", b.id, "2")
	a2.expectMessage("r1", b.id, "3")
	if f := a2.expect("peer-joined"); f.ID != c.id || f.Room != "r1" {
		t.Fatalf("missed peer-joined = %+v", f)
	}
	// No re-join needed; b heard no peer-left (its next frame is a2's message).
	a2.message("r1", "", "back")
	b.expectMessage("r1", a.id, `"back"`)
	c.expectMessage("r1", a.id, `"back"`)
	b.message("r2", "", "live")
	a2.expectMessage("r2", b.id, `"live"`)

	if got := e.parkedNow(t); got != 0 {
		t.Fatalf("parked gauge %v after the resume", got)
	}
	if got := metrictest.Value(t, e.reg, "icehub_signal_resumes_total", map[string]string{"result": "resumed"}); got != 1 {
		t.Fatalf("resumes_total{resumed} = %v", got)
	}
}

func TestResumeWindowPassesThenPeerLeft(t *testing.T) {
	const window = 700 * time.Millisecond
	e := newEnv(t, time.Hour, func(s *Settings) { s.ResumeWindow = window })
	a, b := e.connect(t), e.connect(t)
	a.join("r")
	b.join("r")
	a.expect("peer-joined")
	start := time.Now()
	// Not e.drop: the parked gauge is 1 for the window only, which a starved poll can miss.
	// That a was parked shows in peer-left coming no earlier than the window's end.
	_ = a.conn.Close()
	f, err := b.read(10 * time.Second)
	if err != nil || f.Type != "peer-left" || f.ID != a.id {
		t.Fatalf("got %+v %v, want peer-left for a", f, err)
	}
	if d := time.Since(start); d < window {
		t.Fatalf("peer-left %v after the drop, inside the %v window", d, window)
	}
	eventually(t, 2*time.Second, "parked gauge back to 0", func() bool { return e.parkedNow(t) == 0 })
	late := e.resume(t, a.welcome.Resume)
	if late.welcome.Resumed || late.id == a.id || late.welcome.Resume == "" {
		t.Fatalf("expired token: welcome %+v, want a new session", late.welcome)
	}
	if got := metrictest.Value(t, e.reg, "icehub_signal_resumes_total", map[string]string{"result": "expired"}); got != 1 {
		t.Fatalf("resumes_total{expired} = %v", got)
	}
}

func TestResumeTokenIsSingleUse(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	a, b := e.connect(t), e.connect(t)
	a.join("r")
	b.join("r")
	a.expect("peer-joined")
	e.drop(t, a)
	a2 := e.resume(t, a.welcome.Resume)
	if !a2.welcome.Resumed {
		t.Fatal("first use refused")
	}
	replay := e.resume(t, a.welcome.Resume)
	if replay.welcome.Resumed || replay.id == a.id {
		t.Fatalf("replayed token resumed: %+v", replay.welcome)
	}
	// The replay neither took the session nor disturbed it.
	b.message("r", "", "still")
	a2.expectMessage("r", b.id, `"still"`)
}

// Used, unknown, malformed and forged tokens all get a working new session, and none of them
// spends the real one.
func TestBadTokensGetNewSession(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	a := e.connect(t)
	a.join("r")
	e.drop(t, a)
	raw, err := base64.RawURLEncoding.DecodeString(a.welcome.Resume)
	if err != nil || len(raw) != 48 {
		t.Fatalf("token is not 48 base64url bytes: %v", err)
	}
	wrongValidator := bytes.Clone(raw)
	wrongValidator[40] ^= 1
	wrongSelector := bytes.Clone(raw)
	wrongSelector[3] ^= 1
	neverIssued := bytes.Repeat([]byte{7}, 48)
	for name, tok := range map[string]string{
		"empty":            "",
		"short":            "abc",
		"not base64":       strings.Repeat("!", 64),
		"padded":           a.welcome.Resume + "==",
		"never issued":     base64.RawURLEncoding.EncodeToString(neverIssued),
		"right selector":   base64.RawURLEncoding.EncodeToString(wrongValidator),
		"right validator":  base64.RawURLEncoding.EncodeToString(wrongSelector),
		"upper case":       strings.ToUpper(a.welcome.Resume),
		"peer id as token": a.id,
	} {
		p := e.resume(t, tok)
		if p.welcome.Resumed || p.id == a.id || len(p.welcome.Resume) != 64 {
			t.Fatalf("%s: welcome %+v, want a new resumable session", name, p.welcome)
		}
		p.join("own-" + strings.ReplaceAll(name, " ", "-"))
	}
	if a2 := e.resume(t, a.welcome.Resume); !a2.welcome.Resumed || a2.id != a.id {
		t.Fatal("the real token stopped working after the bad attempts")
	}
}

// After a network change the hub usually has not noticed the old connection is dead: the
// resume takes the session over, the old connection is closed with 4000, nobody hears
// peer-left.
func TestResumeTakesOverOpenConnection(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	a, b := e.connect(t), e.connect(t)
	a.join("r")
	b.join("r")
	a.expect("peer-joined")
	a2 := e.resume(t, a.welcome.Resume)
	if !a2.welcome.Resumed || a2.id != a.id {
		t.Fatalf("welcome %+v", a2.welcome)
	}
	if code := a.expectClose(5 * time.Second); code != closeReplaced {
		t.Fatalf("old connection closed with %d, want %d", code, closeReplaced)
	}
	b.message("r", "", "to-new")
	a2.expectMessage("r", b.id, `"to-new"`)
	a2.message("r", "", "from-new")
	b.expectMessage("r", a.id, `"from-new"`) // not peer-left
}

// A client that closes with a close frame meant to leave: peer-left at once, token void.
func TestCloseFrameEndsSession(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	a, b := e.connect(t), e.connect(t)
	a.join("r")
	b.join("r")
	a.expect("peer-joined")
	a.bye()
	if f := b.expect("peer-left"); f.ID != a.id {
		t.Fatalf("peer-left = %+v", f)
	}
	if a2 := e.resume(t, a.welcome.Resume); a2.welcome.Resumed {
		t.Fatal("a session closed on purpose was resumed")
	}
}

// A peer reaped for not answering pings is parked like any lost connection.
func TestReapedPeerResumes(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.PingInterval = 100 * time.Millisecond })
	b := e.connect(t)
	b.join("r")
	// a never reads, so gorilla never answers the hub's pings.
	conn, _, err := e.dialRaw(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var w frame
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := conn.ReadJSON(&w); err != nil {
		t.Fatal(err)
	}
	if err := conn.WriteJSON(map[string]string{"type": "join", "room": "r"}); err != nil {
		t.Fatal(err)
	}
	b.expect("peer-joined")
	// b keeps reading (a request and its answer each round) so that it answers pings.
	eventually(t, 10*time.Second, "dead peer parked", func() bool {
		time.Sleep(50 * time.Millisecond) // under messages_per_second
		b.send(map[string]string{"type": "ice-servers"})
		b.expect("ice-servers")
		return e.parkedNow(t) == 1
	})
	a2 := e.resume(t, w.Resume)
	if !a2.welcome.Resumed || a2.id != w.ID {
		t.Fatalf("welcome %+v", a2.welcome)
	}
	a2.message("r", "", 1)
	b.expectMessage("r", w.ID, "1")
}

func TestResumeOff(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.ResumeWindow = 0 })
	a, b := e.connect(t), e.connect(t)
	if a.welcome.Resume != "" || a.welcome.ResumeWindow != 0 {
		t.Fatalf("resume off, yet welcome offers %q for %d s", a.welcome.Resume, a.welcome.ResumeWindow)
	}
	a.join("r")
	b.join("r")
	a.expect("peer-joined")
	_ = a.conn.Close()
	if f := b.expect("peer-left"); f.ID != a.id {
		t.Fatalf("peer-left = %+v", f)
	}
}

// Racing resumes with one token: exactly one wins.
func TestConcurrentResumesOneWins(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.MaxConnsPerIP = 0 })
	a := e.connect(t)
	a.join("r")
	e.drop(t, a)
	const n = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	resumed := 0
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, _, err := e.dialRaw(t, "?resume="+a.welcome.Resume, nil)
			if err != nil {
				t.Error(err)
				return
			}
			var w frame
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if err := conn.ReadJSON(&w); err != nil || w.Type != "welcome" {
				t.Errorf("welcome: %v %+v", err, w)
				return
			}
			if w.Resumed {
				mu.Lock()
				resumed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if resumed != 1 {
		t.Fatalf("%d of %d racing resumes won, want exactly 1", resumed, n)
	}
}

// The hub-side cut (what a test or a proxy timeout does) parks the session too, and the
// client resumes with what it missed.
func TestServerSideCutResumes(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	a, b := e.connect(t), e.connect(t)
	a.join("r")
	b.join("r")
	a.expect("peer-joined")
	e.cut(t, a.id)
	if _, err := a.read(5 * time.Second); err == nil || websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("client side after the cut: %v", err)
	}
	eventually(t, 5*time.Second, "parked", func() bool { return e.parkedNow(t) == 1 })
	b.message("r", "", "gap")
	a2 := e.resume(t, a.welcome.Resume)
	if !a2.welcome.Resumed {
		t.Fatal("not resumed")
	}
	a2.expectMessage("r", b.id, `"gap"`)
}

// What the hub had queued but not yet written when it noticed the loss is replayed too: a
// client stops reading while frames are sent to it until the hub's queue for it backs up;
// then its connection is cut. On resume it gets a contiguous run of frames ending with the
// last one sent, at least as many as were queued.
func TestResumeReplaysWhatWasStillQueued(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) {
		s.MessagesPerSecond = 0
		s.SendQueue = 1024
		s.ResumeBuffer = 1024
	})
	a, b := e.connect(t), e.connect(t)
	a.join("r")
	b.join("r")
	a.expect("peer-joined")
	queued := func() int {
		e.hub.mu.Lock()
		defer e.hub.mu.Unlock()
		for c := range e.hub.clients {
			if c.id == a.id {
				c.mu.Lock()
				defer c.mu.Unlock()
				return len(c.queue)
			}
		}
		return -1
	}
	pad := strings.Repeat("p", 4<<10)
	n, backlog := 0, 0
	for backlog < 64 {
		if n > 20000 {
			t.Fatal("the hub's queue never backed up")
		}
		for range 20 {
			b.sendRaw(fmt.Sprintf(`{"type":"message","room":"r","data":{"i":%d,"p":%q}}`, n, pad))
			n++
		}
		b.send(map[string]string{"type": "ice-servers"})
		b.expect("ice-servers") // every message so far has been handed to a's connection
		backlog = queued()
	}
	e.cut(t, a.id)
	eventually(t, 5*time.Second, "parked", func() bool { return e.parkedNow(t) == 1 })
	a2 := e.resume(t, a.welcome.Resume)
	if !a2.welcome.Resumed {
		t.Fatal("not resumed")
	}
	first, next := -1, -1
	for next != n {
		f := a2.expect("message")
		var d struct{ I int }
		if err := json.Unmarshal(f.Data, &d); err != nil {
			t.Fatal(err)
		}
		if first < 0 {
			first, next = d.I, d.I
		}
		if d.I != next {
			t.Fatalf("replay jumps from %d to %d", next-1, d.I)
		}
		next++
	}
	if n-first < backlog {
		t.Fatalf("replayed %d frames, fewer than the %d queued", n-first, backlog)
	}
	t.Logf("replayed messages %d..%d of %d (%d were queued)", first, n-1, n, backlog)
}
