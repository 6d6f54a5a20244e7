package turnserver

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

// sourceNonces makes the NONCE of the long-term credential mechanism (RFC 8489 section 9.2)
// a proof that the client receives what is sent to its address.
//
// pion's nonces are the same for every client in a given minute, so anyone could fetch one
// from their own address and then send authenticated requests with a spoofed source:
// allocations charged to a victim's address, MESSAGE-INTEGRITY checks (HMAC work) charged
// to it. Here every nonce a client sees is minted for its IP (a keyed hash of the IP and the
// minute under a key of this process): admission replaces the nonce in each 401 and 438 pion
// sends, checks the nonce of each authenticated request against the source IP before any
// integrity work, and, once the request has verified, hands pion the same request with
// pion's own current nonce and MESSAGE-INTEGRITY recomputed under the key that verified it.
// A blind spoofer never learns a nonce minted for its victim's IP, so its authenticated
// requests cost one cheap hash and are refused like unauthenticated ones.
type sourceNonces struct {
	key [32]byte

	mu       sync.Mutex
	pion     string    // the newest nonce pion put in a 401 or 438
	pionSeen time.Time // when
}

const (
	// nonceLifetime is how long a minted nonce is accepted (pion's is an hour too).
	nonceLifetime = time.Hour
	// pionNonceFresh is how long a nonce seen from pion is used for rewritten requests:
	// well within pion's hour, so pion never finds it stale.
	pionNonceFresh = 30 * time.Minute
	nonceMACLen    = 12
)

func newSourceNonces() *sourceNonces {
	n := &sourceNonces{}
	_, _ = rand.Read(n.key[:]) // crypto/rand.Read does not fail on supported platforms
	return n
}

// mac is SHA-256 over the key, the minute and the IP. A keyed hash with the key in front is
// a sound MAC here: every input has the same fixed length, so the length-extension weakness
// of such a construction has nothing to extend, and it costs one hash without allocating
// (HMAC costs two and allocates, on every request that carries a nonce).
func (n *sourceNonces) mac(minute uint32, ip netip.Addr) [nonceMACLen]byte {
	var b [32 + 4 + 16]byte
	copy(b[:32], n.key[:])
	binary.BigEndian.PutUint32(b[32:36], minute)
	ip16 := ip.Unmap().As16()
	copy(b[36:], ip16[:])
	sum := sha256.Sum256(b[:])
	var out [nonceMACLen]byte
	copy(out[:], sum[:])
	return out
}

// mint returns a nonce for clients at ip.
func (n *sourceNonces) mint(ip netip.Addr, now time.Time) string {
	minute := uint32(now.Unix() / 60)
	var raw [4 + nonceMACLen]byte
	binary.BigEndian.PutUint32(raw[:4], minute)
	mac := n.mac(minute, ip)
	copy(raw[4:], mac[:])
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// valid reports whether nonce was minted for ip within nonceLifetime.
func (n *sourceNonces) valid(nonce []byte, ip netip.Addr, now time.Time) bool {
	var raw [4 + nonceMACLen]byte
	if base64.RawURLEncoding.EncodedLen(len(raw)) != len(nonce) {
		return false
	}
	if k, err := base64.RawURLEncoding.Decode(raw[:], nonce); err != nil || k != len(raw) {
		return false
	}
	minute := binary.BigEndian.Uint32(raw[:4])
	age := now.Unix()/60 - int64(minute)
	if age < 0 || age > int64(nonceLifetime/time.Minute) {
		return false
	}
	mac := n.mac(minute, ip)
	return subtle.ConstantTimeCompare(raw[4:], mac[:]) == 1
}

// notePion records a nonce pion just sent.
func (n *sourceNonces) notePion(nonce string, now time.Time) {
	n.mu.Lock()
	n.pion, n.pionSeen = nonce, now
	n.mu.Unlock()
}

// pionNonce returns a nonce pion accepts now, if one was seen recently enough.
func (n *sourceNonces) pionNonce(now time.Time) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.pion == "" || now.Sub(n.pionSeen) > pionNonceFresh {
		return "", false
	}
	return n.pion, true
}
