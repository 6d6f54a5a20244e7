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
// Only usernames whose MESSAGE-INTEGRITY checked out are remembered, so requests with made-up
// usernames cannot fill it. Entries die with the username's expiry and with any change of
// the secrets.
type keyMemo struct {
	mu    sync.Mutex
	epoch uint64
	m     map[string]memoEntry
}

// memoEntry is what a username gives: the user and one key per secret, in the ring's order.
type memoEntry struct {
	user       string
	expires    time.Time
	keys       [][]byte
	epoch      uint64 // the ring's epoch the keys were derived under
	remembered bool   // came from the memo
}

func newKeyMemo() *keyMemo { return &keyMemo{m: make(map[string]memoEntry)} }

// keys returns username's entry from the memo, or derives it; ok is false when the username
// is malformed or expired.
func (k *keyMemo) keys(ring *auth.Ring, realm, username string, now time.Time) (e memoEntry, ok bool) {
	epoch := ring.Epoch()
	k.mu.Lock()
	if k.epoch != epoch {
		clear(k.m)
		k.epoch = epoch
	}
	e, hit := k.m[username]
	k.mu.Unlock()
	if hit && now.Before(e.expires) {
		e.remembered = true
		return e, true
	}
	expires, _, err := auth.Parse(username)
	if err != nil {
		return memoEntry{}, false
	}
	user, passwords, err := ring.Passwords(username)
	if err != nil {
		return memoEntry{}, false
	}
	e = memoEntry{user: user, expires: expires, keys: make([][]byte, len(passwords)), epoch: epoch}
	for i, pw := range passwords {
		e.keys[i] = turn.GenerateAuthKey(username, realm, pw)
	}
	return e, true
}

// remember keeps e for username once one of its keys verified a message, unless the
// secrets changed since e was derived.
func (k *keyMemo) remember(username string, e memoEntry) {
	if e.remembered {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.epoch != e.epoch {
		return
	}
	if len(k.m) >= maxTracked {
		clear(k.m)
	}
	e.remembered = false
	k.m[username] = e
}
