package signal

import (
	"net/http"
	"reflect"
	"testing"
	"time"
)

// originStatus dials /ws with Origin o and returns 101 or the refusal's status.
func (e *testEnv) originStatus(t *testing.T, o string) int {
	t.Helper()
	_, resp, err := e.dialRaw(t, "", http.Header{"Origin": {o}})
	if err == nil {
		return 101
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	return resp.StatusCode
}

// A reload is all or nothing: a refused PrepareReload changes nothing, a prepared one
// changes nothing until its commit, and the commit changes everything it names.
func TestPrepareReloadAllOrNothing(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) {
		s.AllowedOrigins = []string{"https://a.example"}
		s.MessagesPerSecond, s.MessageBurst = 0.1, 1
	})
	p := e.connect(t)
	before := e.hub.Settings()

	next := before
	next.AllowedOrigins = []string{"https://b.example"}
	next.MessagesPerSecond, next.MessageBurst = 1000, 1000
	next.APIKeys = []string{"k-0123456789"}
	bad := next
	bad.PublicOrigins = []string{"ftp://files.example"} // one bad value among good ones
	if commit, err := e.hub.PrepareReload(bad); err == nil || commit != nil {
		t.Fatalf("PrepareReload accepted a bad public origin (err %v)", err)
	}
	commit, err := e.hub.PrepareReload(next)
	if err != nil {
		t.Fatal(err)
	}
	// Refused, and prepared but not committed: all as before.
	if got := e.hub.Settings(); !reflect.DeepEqual(got, before) {
		t.Fatalf("settings changed before the commit:\n%+v\nwant\n%+v", got, before)
	}
	if e.originStatus(t, "https://a.example") != 101 || e.originStatus(t, "https://b.example") != 403 {
		t.Fatal("origins changed before the commit")
	}
	p.send(map[string]string{"type": "ice-servers"})
	p.send(map[string]string{"type": "ice-servers"})
	p.expect("ice-servers")
	p.expectError(CodeRateLimited) // the open connection still has the old rate

	commit()
	if got := e.hub.Settings(); !reflect.DeepEqual(got, next) {
		t.Fatalf("settings after the commit:\n%+v\nwant\n%+v", got, next)
	}
	if _, resp, err := e.dialRaw(t, "", http.Header{"Origin": {"https://b.example"}}); err == nil || resp.StatusCode != 401 {
		t.Fatalf("the new API key is not required: %v", err)
	}
	if _, resp, err := e.dialRaw(t, "?key=k-0123456789", http.Header{"Origin": {"https://a.example"}}); err == nil || resp.StatusCode != 403 {
		t.Fatalf("the old origin is still allowed: %v", err)
	}
	time.Sleep(1100 * time.Millisecond) // past the one rate-limit error a second
	for range 5 {
		p.send(map[string]string{"type": "ice-servers"})
	}
	for range 5 {
		p.expect("ice-servers") // the open connection got the new rate
	}
}
