package signal

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"icehub/internal/metrictest"
	"icehub/internal/testenv"
)

// What a parked session may cost the hub: buffers bounded in frames and bytes, parked
// sessions capped per IP and in all, and tokens that never reach the log.

func TestResumeBufferBound(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.ResumeBuffer = 5 })
	a, b := e.connect(t), e.connect(t)
	a.join("r")
	b.join("r")
	a.expect("peer-joined")

	// Exactly the bound: everything arrives.
	e.drop(t, a)
	for i := range 5 {
		b.message("r", "", i)
	}
	a2 := e.resume(t, a.welcome.Resume)
	for i := range 5 {
		a2.expectMessage("r", b.id, fmt.Sprint(i))
	}
	// One past it: the session ends at once, not when the window passes.
	e.drop(t, a2)
	start := time.Now()
	for i := range 6 {
		b.message("r", "", i)
	}
	if f := b.expect("peer-left"); f.ID != a.id || time.Since(start) > 5*time.Second {
		t.Fatalf("peer-left = %+v after %v", f, time.Since(start))
	}
	a3 := e.resume(t, a2.welcome.Resume)
	if a3.welcome.Resumed || a3.id == a.id {
		t.Fatal("an overflowed session was resumed")
	}
	if got := metrictest.Value(t, e.reg, "icehub_signal_resumes_total", map[string]string{"result": "overflow"}); got != 1 {
		t.Fatalf("resumes_total{overflow} = %v", got)
	}
	eventually(t, 2*time.Second, "parked gauge back to 0", func() bool { return e.parkedNow(t) == 0 })
}

// The byte bound holds whatever resume_buffer says: 17 frames of 62 KiB exceed 1 MiB.
func TestResumeBufferByteBound(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	a, b := e.connect(t), e.connect(t)
	a.join("r")
	b.join("r")
	a.expect("peer-joined")
	e.drop(t, a)
	big := strings.Repeat("x", 62<<10)
	for range 17 {
		b.message("r", "", big)
	}
	if f := b.expect("peer-left"); f.ID != a.id {
		t.Fatalf("peer-left = %+v", f)
	}
	if a2 := e.resume(t, a.welcome.Resume); a2.welcome.Resumed {
		t.Fatal("a session past 1 MiB of missed frames was resumed")
	}
}

// A replay longer than the send queue is delivered whole, not taken for a slow consumer.
func TestResumeReplayLongerThanSendQueue(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.SendQueue = 16; s.ResumeBuffer = 100 })
	a, b := e.connect(t), e.connect(t)
	a.join("r")
	b.join("r")
	a.expect("peer-joined")
	e.drop(t, a)
	for i := range 60 {
		b.message("r", "", i)
	}
	// The last frame b sent has been handled once b's own request is answered.
	b.send(map[string]string{"type": "ice-servers"})
	b.expect("ice-servers")
	a2 := e.resume(t, a.welcome.Resume)
	for i := range 60 {
		a2.expectMessage("r", b.id, fmt.Sprint(i))
	}
}

func TestParkedCapsPerIPAndTotal(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.MaxConnsPerIP = 2; s.MaxPeersPerRoom = 8 })
	b := e.connect(t)
	b.join("r")
	var as []*peer
	for range 3 {
		a := e.connect(t)
		a.join("r")
		b.expect("peer-joined")
		as = append(as, a)
		_ = a.conn.Close()
		// Wait until the connection slot is free again (one live connection besides b).
		eventually(t, 5*time.Second, "connection released", func() bool {
			return metrictest.Value(t, e.reg, "icehub_signal_connections", nil) == 1
		})
	}
	// Two parked (the per-IP cap is max_conns_per_ip), the third left at once.
	if f := b.expect("peer-left"); f.ID != as[2].id {
		t.Fatalf("peer-left = %+v, want the third dropped peer", f)
	}
	if got := e.parkedNow(t); got != 2 {
		t.Fatalf("%v parked, want 2", got)
	}
	if got := metrictest.Value(t, e.reg, "icehub_signal_resumes_total", map[string]string{"result": "not-parked"}); got != 1 {
		t.Fatalf("resumes_total{not-parked} = %v", got)
	}

	// The node-wide cap.
	e2 := newEnv(t, time.Hour, func(s *Settings) { s.MaxPeersPerRoom = 8 })
	e2.hub.parkCap = 1
	b2 := e2.connect(t)
	b2.join("r")
	a1, a2 := e2.connect(t), e2.connect(t)
	a1.join("r")
	a2.join("r")
	b2.expect("peer-joined")
	b2.expect("peer-joined")
	e2.drop(t, a1)
	_ = a2.conn.Close()
	if f := b2.expect("peer-left"); f.ID != a2.id {
		t.Fatalf("peer-left = %+v, want a2", f)
	}
}

// Resume tokens are credentials: nothing the hub logs, at any level, contains one.
func TestResumeTokensNeverLogged(t *testing.T) {
	var logs testenv.Buffer
	sig := DefaultSettings()
	sig.PingInterval = 5 * time.Second
	e := newEnvConfig(t, Config{Settings: sig, Ring: newTestRing(t), TTL: time.Hour, ICEURLs: testICE,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	a, b := e.connect(t), e.connect(t)
	a.join("r")
	b.join("r")
	a.expect("peer-joined")
	tokens := []string{a.welcome.Resume, b.welcome.Resume}
	e.drop(t, a)
	a2 := e.resume(t, a.welcome.Resume)
	tokens = append(tokens, a2.welcome.Resume)
	e.resume(t, a.welcome.Resume) // refused replay
	a2.bye()
	b.expect("peer-left")
	out := logs.String()
	if !strings.Contains(out, "session resumed") {
		t.Fatalf("debug log did not cover the resume:\n%s", out)
	}
	for _, tok := range tokens {
		if strings.Contains(out, tok) || strings.Contains(out, tok[:22]) {
			t.Fatalf("a resume token (or its selector) is in the log:\n%s", out)
		}
	}
}
