package turnserver

import (
	"sync"
	"time"

	"github.com/pion/turn/v5"

	"icehub/auth"
	"icehub/internal/ratelimit"
)

// longTermKeys remembers the long-term keys derived for a REST username under the current
// secrets. A client sends every request of an allocation (Allocate, Refresh,
// CreatePermission, ChannelBind) and often several allocations with one username; deriving
// its keys once instead of per request saves an HMAC-SHA1 per secret and an MD5 each time.
// Only usernames whose MESSAGE-INTEGRITY checked out are remembered, so requests with made-up
// usernames cannot fill it. Entries die with the username's expiry and with any change of
// the secrets.
type longTermKeys struct {
	mu    sync.Mutex
	epoch uint64
	m     map[string]keyEntry
}

// keyEntry is what a username gives: the user and one key per secret, in the ring's order.
type keyEntry struct {
	user       string
	expires    time.Time
	keys       [][]byte
	epoch      uint64 // the ring's epoch the keys were derived under
	remembered bool   // came from the map
}

func newLongTermKeys() *longTermKeys { return &longTermKeys{m: make(map[string]keyEntry)} }

// get returns username's entry from the map, or derives it; ok is false when the username
// is malformed or expired.
func (k *longTermKeys) get(ring *auth.Ring, realm, username string, now time.Time) (e keyEntry, ok bool) {
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
		return keyEntry{}, false
	}
	user, passwords, err := ring.Passwords(username)
	if err != nil {
		return keyEntry{}, false
	}
	e = keyEntry{user: user, expires: expires, keys: make([][]byte, len(passwords)), epoch: epoch}
	for i, pw := range passwords {
		e.keys[i] = turn.GenerateAuthKey(username, realm, pw)
	}
	return e, true
}

// remember keeps e for username once one of its keys verified a message, unless the
// secrets changed since e was derived.
func (k *longTermKeys) remember(username string, e keyEntry) {
	if e.remembered {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.epoch != e.epoch {
		return
	}
	if len(k.m) >= ratelimit.MaxTracked {
		clear(k.m)
	}
	e.remembered = false
	k.m[username] = e
}
