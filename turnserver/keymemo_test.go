package turnserver

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"icehub/auth"
)

func TestKeyMemoFollowsSecretsAndExpiry(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ring, err := auth.NewRing(auth.Config{Secrets: []string{"one", "two"}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	m := newKeyMemo()
	username := strconv.FormatInt(now.Add(time.Minute).Unix(), 10) + ":alice"
	want := func(secrets ...string) [][]byte {
		var ks [][]byte
		for _, s := range secrets {
			ks = append(ks, turn.GenerateAuthKey(username, "example.org", auth.Password(s, username)))
		}
		return ks
	}
	check := func(label string, wantKeys [][]byte) {
		t.Helper()
		user, keys, ok := m.keys(ring, "example.org", username, now)
		if !ok || user != "alice" || len(keys) != len(wantKeys) {
			t.Fatalf("%s: user %q, %d keys, ok %v", label, user, len(keys), ok)
		}
		for i := range keys {
			if !bytes.Equal(keys[i], wantKeys[i]) {
				t.Fatalf("%s: key %d differs", label, i)
			}
		}
	}
	check("first", want("one", "two"))
	check("remembered", want("one", "two"))

	// A reload that removes a secret must take its key away at once.
	if err := ring.Set([]string{"three"}); err != nil {
		t.Fatal(err)
	}
	check("after reload", want("three"))

	now = now.Add(2 * time.Minute)
	if _, _, ok := m.keys(ring, "example.org", username, now); ok {
		t.Fatal("an expired username still has keys")
	}
	if _, _, ok := m.keys(ring, "example.org", "not-a-rest-username", now); ok {
		t.Fatal("a malformed username has keys")
	}
}
