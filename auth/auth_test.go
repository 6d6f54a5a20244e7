package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"
)

func fixedRing(t *testing.T, now time.Time, secrets ...string) *Ring {
	t.Helper()
	r, err := NewRing(Config{Secrets: secrets, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestMintMatchesTURNRESTScheme(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	r := fixedRing(t, now, "north-secret")
	c, err := r.Mint("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c.Username != "1700003600:alice" {
		t.Fatalf("username %q, want expiry:user", c.Username)
	}
	// Known answer computed independently: printf '1700003600:alice' | openssl dgst -sha1 -hmac north-secret -binary | base64
	if want := "Ji4axghh2/aljHmsPgH9mtDGVLw="; c.Password != want {
		t.Fatalf("password %q, want %q", c.Password, want)
	}
}

func TestPasswordAgreesWithPion(t *testing.T) {
	// pion's own REST helper derives the password the same way coturn does.
	user, pass, err := turn.GenerateLongTermTURNRESTCredentials("s3cret-value", "bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := Password("s3cret-value", user); got != pass {
		t.Fatalf("Password(%q) = %q, pion says %q", user, got, pass)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	signer := fixedRing(t, now, "current-secret", "previous-secret")
	fresh, _ := signer.Mint("carol", time.Minute)
	old := fixedRing(t, now, "previous-secret")
	rotated, _ := old.Mint("dave", time.Minute)
	stranger := fixedRing(t, now, "someone-elses")
	foreign, _ := stranger.Mint("eve", time.Minute)
	expired := Credentials{Username: "1699999999:carol"}
	expired.Password = Password("current-secret", expired.Username)

	cases := []struct {
		name, username, password string
		wantUser                 string
		wantErr                  error
	}{
		{"first secret", fresh.Username, fresh.Password, "carol", nil},
		{"rotated secret", rotated.Username, rotated.Password, "dave", nil},
		{"unknown secret", foreign.Username, foreign.Password, "eve", ErrWrongSignature},
		{"tampered user", strings.Replace(fresh.Username, "carol", "mallory", 1), fresh.Password, "mallory", ErrWrongSignature},
		{"expired", expired.Username, expired.Password, "carol", ErrExpired},
		{"no colon", "carol", "x", "", ErrMalformed},
		{"not a number", "soon:carol", "x", "", ErrMalformed},
		{"empty user", "1700003600:", "x", "", ErrMalformed},
		{"space in user", "1700003600:a b", "x", "", ErrMalformed},
		{"huge expiry", "99999999999999999999:carol", "x", "", ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			user, err := signer.Verify(tc.username, tc.password)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantUser != "" && user != tc.wantUser {
				t.Fatalf("user = %q, want %q", user, tc.wantUser)
			}
		})
	}
}

func TestExpiryBoundary(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := now
	r, _ := NewRing(Config{Secrets: []string{"boundary-secret"}, Now: func() time.Time { return clock }})
	c, _ := r.Mint("frank", 10*time.Second)
	clock = now.Add(9 * time.Second)
	if _, err := r.Verify(c.Username, c.Password); err != nil {
		t.Fatalf("valid one second before expiry: %v", err)
	}
	clock = now.Add(10 * time.Second)
	if _, err := r.Verify(c.Username, c.Password); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: err = %v, want ErrExpired", err)
	}
}

func TestSetRotatesSigner(t *testing.T) {
	r := fixedRing(t, time.Unix(1_700_000_000, 0), "first-secret")
	before, _ := r.Mint("gina", time.Hour)
	if err := r.Set([]string{"second-secret"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(before.Username, before.Password); !errors.Is(err, ErrWrongSignature) {
		t.Fatalf("removed secret still verifies: %v", err)
	}
	after, _ := r.Mint("gina", time.Hour)
	if after.Password != Password("second-secret", after.Username) {
		t.Fatal("new signer not used")
	}
	if err := r.Set(nil); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("Set(nil) = %v, want ErrNoSecret", err)
	}
}

func TestMintRejectsBadUser(t *testing.T) {
	r := fixedRing(t, time.Now(), "some-secret")
	for _, u := range []string{"", "has space", strings.Repeat("x", MaxUserLen+1), "tab\t"} {
		if _, err := r.Mint(u, time.Hour); !errors.Is(err, ErrBadUser) {
			t.Errorf("Mint(%q) err = %v, want ErrBadUser", u, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"1700000000:alice", ":", "1:", "x:y", "1700000000:a:b", "-1:a", "0:a", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		exp, user, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrMalformed", s, err)
			}
			return
		}
		if user == "" || exp.Unix() <= 0 || !strings.HasSuffix(s, ":"+user) {
			t.Fatalf("Parse(%q) = %v, %q: inconsistent", s, exp, user)
		}
	})
}
