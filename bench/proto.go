//go:build linux

package main

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // TURN REST credentials are defined as HMAC-SHA1.
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/pion/stun/v4"
)

// restCredentials returns the TURN REST username/password pair that coturn's
// static-auth-secret and icehub's auth ring both accept: "<expiry>:<user>" and
// base64(HMAC-SHA1(secret, username)).
func restCredentials(secret, user string, expiry time.Time) (username, password string) {
	username = strconv.FormatInt(expiry.Unix(), 10) + ":" + user
	return username, restPassword(secret, username)
}

func restPassword(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ChannelData (RFC 8656 §12.4) is hand-encoded rather than built with pion/turn so the
// generator's hot path is a few byte stores: 2-byte channel number, 2-byte length, payload,
// padded to 4 bytes (padding is mandatory over UDP per RFC 5766 and harmless per RFC 8656).
const channelDataHeader = 4

// encodeChannelData writes the ChannelData frame for payload into dst and returns its length.
// dst must hold channelDataLen(len(payload)) bytes.
func encodeChannelData(dst []byte, channel uint16, payload []byte) int {
	binary.BigEndian.PutUint16(dst[0:2], channel)
	binary.BigEndian.PutUint16(dst[2:4], uint16(len(payload)))
	n := channelDataHeader + copy(dst[channelDataHeader:], payload)
	for n%4 != 0 {
		dst[n] = 0
		n++
	}
	return n
}

func channelDataLen(payload int) int { return (channelDataHeader + payload + 3) &^ 3 }

var errNotChannelData = errors.New("not a ChannelData frame")

// decodeChannelData returns the channel number and payload of a ChannelData frame.
func decodeChannelData(b []byte) (uint16, []byte, error) {
	if len(b) < channelDataHeader {
		return 0, nil, errNotChannelData
	}
	ch := binary.BigEndian.Uint16(b[0:2])
	if ch < 0x4000 || ch > 0x7FFF {
		return 0, nil, errNotChannelData
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if channelDataHeader+n > len(b) {
		return 0, nil, errNotChannelData
	}
	return ch, b[channelDataHeader : channelDataHeader+n], nil
}

// TURN attributes pion/stun does not model as setters; they are tiny enough to write inline.
type requestedTransportUDP struct{}

func (requestedTransportUDP) AddTo(m *stun.Message) error {
	m.Add(stun.AttrRequestedTransport, []byte{17, 0, 0, 0})
	return nil
}

type lifetime uint32

func (l lifetime) AddTo(m *stun.Message) error {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, uint32(l))
	m.Add(stun.AttrLifetime, v)
	return nil
}

type channelNumber uint16

func (c channelNumber) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChannelNumber, []byte{byte(c >> 8), byte(c), 0, 0})
	return nil
}

type peerAddress struct{ addr *net.UDPAddr }

func (p peerAddress) AddTo(m *stun.Message) error {
	return stun.XORMappedAddress{IP: p.addr.IP, Port: p.addr.Port}.AddToAs(m, stun.AttrXORPeerAddress)
}

// longTerm holds what a client learns from the first 401 (realm, nonce) and derives from
// its credentials, so later requests on the same 5-tuple authenticate in one round trip.
type longTerm struct {
	username, password string
	realm, nonce       string
	key                stun.MessageIntegrity
}

// setters appends USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (which must come last
// before FINGERPRINT) to a request's attribute setters.
func (lt *longTerm) setters(s ...stun.Setter) []stun.Setter {
	return append(s, stun.NewUsername(lt.username), stun.NewRealm(lt.realm),
		stun.NewNonce(lt.nonce), lt.key)
}

// learn reads REALM and NONCE from a 401 or 438 answer and derives the long-term key
// MD5(username:realm:password).
func (lt *longTerm) learn(m *stun.Message) error {
	var realm stun.Realm
	var nonce stun.Nonce
	if err := realm.GetFrom(m); err != nil {
		return fmt.Errorf("challenge without REALM: %w", err)
	}
	if err := nonce.GetFrom(m); err != nil {
		return fmt.Errorf("challenge without NONCE: %w", err)
	}
	if string(realm) != lt.realm {
		lt.realm = string(realm)
		lt.key = stun.NewLongTermIntegrity(lt.username, lt.realm, lt.password)
	}
	lt.nonce = string(nonce)
	return nil
}

// errorCode returns the STUN error code of an error response, 0 otherwise.
func errorCode(m *stun.Message) int {
	if m.Type.Class != stun.ClassErrorResponse {
		return 0
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(m); err != nil {
		return -1
	}
	return int(ec.Code)
}

// newRequest builds a request with a fresh transaction ID.
func newRequest(method stun.Method, setters ...stun.Setter) (*stun.Message, error) {
	s := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, setters...)
	return stun.Build(s...)
}
