package turnserver

import (
	"sync"
	"time"

	"github.com/pion/turn/v5"

	"icehub/auth"
)

// keyMemo remembers the long-term keys derived for a REST username under the current
// secrets. A client sends every request of an allocation (Allocate, Refresh,
// CreatePermission, ChannelBind) and often several allocations with one username; deriving
// its keys once instead of per request saves an HMAC-SHA1 per secret and an MD5 each time.
// Entries die with the username's expiry and with any change of the secrets.
type keyMemo struct {
	mu    sync.Mutex
	epoch uint64
	m     map[string]memoEntry
}

type memoEntry struct {
	user    string
	expires time.Time
	keys    [][]byte // one per secret, in the ring's order
}

func newKeyMemo() *keyMemo { return &keyMemo{m: make(map[string]memoEntry)} }

// keys returns the user named by username and the MESSAGE-INTEGRITY key each secret gives
// it, or ok false when the username is malformed or expired.
func (k *keyMemo) keys(ring *auth.Ring, realm, username string, now time.Time) (user string, keys [][]byte, ok bool) {
	epoch := ring.Epoch()
	k.mu.Lock()
	e, hit := k.m[username]
	if k.epoch != epoch {
		clear(k.m)
		k.epoch, hit = epoch, false
	}
	k.mu.Unlock()
	if hit && now.Before(e.expires) {
		return e.user, e.keys, true
	}
	expires, _, err := auth.Parse(username)
	if err != nil {
		return "", nil, false
	}
	user, passwords, err := ring.Passwords(username)
	if err != nil {
		return "", nil, false
	}
	e = memoEntry{user: user, expires: expires, keys: make([][]byte, len(passwords))}
	for i, pw := range passwords {
		e.keys[i] = turn.GenerateAuthKey(username, realm, pw)
	}
	k.mu.Lock()
	if k.epoch == epoch { // a reload in between: do not keep keys of the old secrets
		if len(k.m) >= maxTracked {
			clear(k.m)
		}
		k.m[username] = e
	}
	k.mu.Unlock()
	return e.user, e.keys, true
}
