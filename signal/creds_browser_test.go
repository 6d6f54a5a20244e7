//go:build unix

package signal

import (
	"context"
	"testing"
	"time"
)

// TestBrowserCallRenewsCredentials: with 5-second TURN credentials the hub pushes fresh ones
// before they expire; the call applies them with setConfiguration and, being relayed,
// restarts ICE onto allocations made with them before the old ones run out, and stays up.
func TestBrowserCallRenewsCredentials(t *testing.T) {
	ring := newTestRing(t)
	e := newEnvWith(t, 5*time.Second, startTURN(t, ring), ring, nil)
	b := launchBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	url := e.srv.URL + "/call.html?room=creds&relay=1&autostart=1&video=0"
	pages := []*page{b.open(ctx, "A", url), b.open(ctx, "B", url)}
	type start struct {
		Username string `json:"username"`
		Expiry   int64  `json:"expiry"` // ms
	}
	first := map[*page]start{}
	for _, p := range pages {
		p.waitFor(ctx, "call connected", `window.demo && demo.call && demo.call.state === 'connected'`)
		p.mustEval(ctx, recorderJS, nil)
		var s start
		p.mustEval(ctx, `(() => {
			const u = demo.call.pc.getConfiguration().iceServers.find(s => s.username).username;
			return {username: u, expiry: parseInt(u, 10) * 1000};
		})()`, &s)
		first[p] = s
	}
	for _, p := range pages {
		old := first[p]
		p.waitFor(ctx, "an ICE restart for expiring credentials", `rec.some(e => e.kind === 'restart' && e.reason === 'credentials expiring')`)
		var restartAt int64
		p.mustEval(ctx, `rec.find(e => e.kind === 'restart' && e.reason === 'credentials expiring').t`, &restartAt)
		if restartAt >= old.Expiry {
			p.fatalf("restarted at %d, after the credentials expired (%d)", restartAt, old.Expiry)
		}
		var applied bool
		p.mustEval(ctx, `demo.call.pc.getConfiguration().iceServers.some(s => s.username && s.username !== '`+old.Username+`' &&
			demo.hub.iceServers.some(h => h.username === s.username && h.credential === s.credential))`, &applied)
		if !applied {
			p.fatalf("the renewed credentials are not in the RTCPeerConnection's configuration")
		}
	}
	for _, p := range pages {
		p.waitFor(ctx, "connected after the restart", `demo.call.state === 'connected' && demo.call.counters.iceRestarts > 0`)
	}
	pages[0].mustEval(ctx, `demo.send('still here')`, nil)
	pages[1].waitFor(ctx, "a chat message after the restart", `demo.chat.includes('still here')`)
}
