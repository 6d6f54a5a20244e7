package turnserver

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"icehub/auth"
)

func TestLongTermKeysFollowSecretsAndExpiry(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ring, err := auth.NewRing(auth.Config{Secrets: []string{"one", "two"}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	m := newLongTermKeys()
	username := strconv.FormatInt(now.Add(time.Minute).Unix(), 10) + ":alice"
	want := func(secrets ...string) [][]byte {
		var ks [][]byte
		for _, s := range secrets {
			ks = append(ks, turn.GenerateAuthKey(username, "example.org", auth.Password(s, username)))
		}
		return ks
	}
	check := func(label string, wantKeys [][]byte, fromMemo bool) keyEntry {
		t.Helper()
		e, ok := m.get(ring, "example.org", username, now)
		if !ok || e.user != "alice" || len(e.keys) != len(wantKeys) || e.remembered != fromMemo {
			t.Fatalf("%s: user %q, %d keys, ok %v, from memo %v", label, e.user, len(e.keys), ok, e.remembered)
		}
		for i := range e.keys {
			if !bytes.Equal(e.keys[i], wantKeys[i]) {
				t.Fatalf("%s: key %d differs", label, i)
			}
		}
		return e
	}
	// Until a message verified with them, keys are derived each time and take no space.
	e := check("first", want("one", "two"), false)
	check("not verified yet", want("one", "two"), false)
	m.remember(username, e)
	check("remembered", want("one", "two"), true)

	// A reload that removes a secret must take its key away at once, and keys derived
	// before it must not be remembered after it.
	stale := e
	stale.remembered = false
	if err := ring.Set([]string{"three"}); err != nil {
		t.Fatal(err)
	}
	check("after reload", want("three"), false)
	m.remember(username, stale)
	check("stale keys not remembered", want("three"), false)

	now = now.Add(2 * time.Minute)
	if _, ok := m.get(ring, "example.org", username, now); ok {
		t.Fatal("an expired username still has keys")
	}
	if _, ok := m.get(ring, "example.org", "not-a-rest-username", now); ok {
		t.Fatal("a malformed username has keys")
	}
}
