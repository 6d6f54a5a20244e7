// Package auth mints and verifies TURN REST credentials: username "<unix expiry>:<user>",
// password base64(HMAC-SHA1(secret, username)), as coturn's use-auth-secret and
// turnutils_uclient -W speak them.
package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST scheme fixes.
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Sentinel errors callers branch on; Verify wraps exactly one of them.
var (
	ErrMalformed = errors.New("malformed username")
	ErrExpired   = errors.New("credentials expired")
	ErrNoSecret  = errors.New("no secret configured")
	ErrBadUser   = errors.New("bad user name")
)

// MaxUserLen bounds the user part so a username stays well inside STUN's 513-byte limit.
const MaxUserLen = 128

// Ring is a set of shared secrets: the first signs, all verify. It is safe for concurrent
// use, and Set swaps the secrets atomically so a reload never races a verification.
type Ring struct {
	secrets atomic.Pointer[[]string]
	epoch   atomic.Uint64
	now     func() time.Time
}

// Config configures a Ring. Now defaults to time.Now.
type Config struct {
	Secrets []string
	Now     func() time.Time
}

// NewRing returns a ring holding cfg.Secrets.
func NewRing(cfg Config) (*Ring, error) {
	r := &Ring{now: cfg.Now}
	if r.now == nil {
		r.now = time.Now
	}
	if err := r.Set(cfg.Secrets); err != nil {
		return nil, err
	}
	return r, nil
}

// Set replaces the secrets; the first one signs from now on.
func (r *Ring) Set(secrets []string) error {
	if len(secrets) == 0 {
		return ErrNoSecret
	}
	cp := append([]string(nil), secrets...)
	r.secrets.Store(&cp)
	r.epoch.Add(1)
	return nil
}

// Epoch changes whenever Set changes the secrets, so caches of what was derived from them
// know when to forget it.
func (r *Ring) Epoch() uint64 { return r.epoch.Load() }

// GenerateSecret returns a random 32-byte secret, base64url encoded.
func GenerateSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux.
	return base64.RawURLEncoding.EncodeToString(b)
}

// Credentials are one time-limited username/password pair.
type Credentials struct {
	Username string
	Password string
	Expires  time.Time
	TTL      time.Duration
}

// Mint returns credentials for user valid for ttl, signed with the first secret.
func (r *Ring) Mint(user string, ttl time.Duration) (Credentials, error) {
	if err := checkUser(user); err != nil {
		return Credentials{}, err
	}
	secrets := *r.secrets.Load()
	exp := r.now().Add(ttl).Truncate(time.Second)
	username := strconv.FormatInt(exp.Unix(), 10) + ":" + user
	return Credentials{
		Username: username,
		Password: Password(secrets[0], username),
		Expires:  exp,
		TTL:      ttl,
	}, nil
}

// Password is base64(HMAC-SHA1(secret, username)).
func Password(secret, username string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Parse splits a REST username into its expiry and user, without checking either.
func Parse(username string) (expires time.Time, user string, err error) {
	ts, user, ok := strings.Cut(username, ":")
	if !ok || ts == "" || len(ts) > 12 {
		return time.Time{}, "", fmt.Errorf("%w: want \"<unix expiry>:<user>\"", ErrMalformed)
	}
	n, perr := strconv.ParseInt(ts, 10, 64)
	if perr != nil || n <= 0 {
		return time.Time{}, "", fmt.Errorf("%w: expiry %q is not a unix time", ErrMalformed, ts)
	}
	if err := checkUser(user); err != nil {
		return time.Time{}, "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return time.Unix(n, 0), user, nil
}

// Passwords returns, for an unexpired well-formed username, the password under every secret,
// first secret first. The TURN side derives its MESSAGE-INTEGRITY keys from these.
func (r *Ring) Passwords(username string) (user string, passwords []string, err error) {
	exp, user, err := Parse(username)
	if err != nil {
		return "", nil, err
	}
	if !r.now().Before(exp) {
		return user, nil, fmt.Errorf("%w at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	secrets := *r.secrets.Load()
	passwords = make([]string, len(secrets))
	for i, s := range secrets {
		passwords[i] = Password(s, username)
	}
	return user, passwords, nil
}

// Verify checks a username/password pair against every secret.
func (r *Ring) Verify(username, password string) (user string, err error) {
	user, pws, err := r.Passwords(username)
	if err != nil {
		return user, err
	}
	for _, p := range pws {
		if hmac.Equal([]byte(p), []byte(password)) {
			return user, nil
		}
	}
	return user, ErrWrongSignature
}

// ErrWrongSignature means no configured secret signed the username.
var ErrWrongSignature = errors.New("password signed by no configured secret")

func checkUser(user string) error {
	if user == "" {
		return fmt.Errorf("%w: empty", ErrBadUser)
	}
	if len(user) > MaxUserLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrBadUser, MaxUserLen)
	}
	for _, c := range []byte(user) {
		if c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: only printable ASCII without spaces", ErrBadUser)
		}
	}
	return nil
}
