package stunwire

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"

	"github.com/pion/stun/v4"
)

// BindingSuccessMax is the largest Binding success response: header, XOR-MAPPED-ADDRESS for
// IPv6, FINGERPRINT.
const BindingSuccessMax = HeaderLen + 4 + 20 + 8

// AppendBindingSuccess writes the Binding success response to request req (whose header
// ParseHeader accepted) from src into out (cap ≥ BindingSuccessMax): XOR-MAPPED-ADDRESS and
// FINGERPRINT, as pion answers.
func AppendBindingSuccess(out, req []byte, src netip.AddrPort) []byte {
	ip := src.Addr().Unmap()
	alen := 8
	if ip.Is6() {
		alen = 20
	}
	total := HeaderLen + 4 + alen + 8
	out = out[:total]
	binary.BigEndian.PutUint16(out[0:2], MessageType(MethodBinding, ClassSuccess))
	binary.BigEndian.PutUint16(out[2:4], uint16(total-HeaderLen))
	copy(out[4:20], req[4:20]) // magic cookie and transaction ID
	a := out[20:]
	binary.BigEndian.PutUint16(a[0:2], uint16(stun.AttrXORMappedAddress))
	binary.BigEndian.PutUint16(a[2:4], uint16(alen))
	a[4] = 0
	binary.BigEndian.PutUint16(a[6:8], src.Port()^uint16(MagicCookie>>16))
	if ip.Is4() {
		a[5] = 1
		v := ip.As4()
		for i := range 4 {
			a[8+i] = v[i] ^ out[4+i]
		}
	} else {
		a[5] = 2
		v := ip.As16()
		for i := range 16 {
			a[8+i] = v[i] ^ out[4+i] // cookie then transaction ID
		}
	}
	f := out[total-8:]
	binary.BigEndian.PutUint16(f[0:2], uint16(stun.AttrFingerprint))
	binary.BigEndian.PutUint16(f[2:4], 4)
	binary.BigEndian.PutUint32(f[4:8], crc32.ChecksumIEEE(out[:total-8])^0x5354554e)
	return out
}

// ParseChannelData returns the channel number and payload of a ChannelData datagram whose
// length field fits in b (UDP may carry padding after it, which is ignored).
func ParseChannelData(b []byte) (num uint16, payload []byte, ok bool) {
	if !IsChannelData(b) {
		return 0, nil, false
	}
	num = binary.BigEndian.Uint16(b[0:2])
	l := int(binary.BigEndian.Uint16(b[2:4]))
	if num > 0x7FFF || ChannelHeaderLen+l > len(b) {
		return 0, nil, false
	}
	return num, b[ChannelHeaderLen : ChannelHeaderLen+l], true
}

// PutChannelHeader writes the ChannelData header for the n payload bytes at
// p[ChannelHeaderLen:] and pads them to 4 bytes as pion does (when p has room); it returns
// the frame length.
func PutChannelHeader(p []byte, num uint16, n int) int {
	binary.BigEndian.PutUint16(p[0:2], num)
	binary.BigEndian.PutUint16(p[2:4], uint16(n))
	frame := ChannelHeaderLen + n
	if padded := (frame + 3) &^ 3; padded <= len(p) {
		clear(p[frame:padded])
		frame = padded
	}
	return frame
}

// Reason phrases of the challenges (RFC 8489 section 14.8).
const (
	ReasonUnauthorized = "Unauthorized"
	ReasonStaleNonce   = "Stale Nonce"
)

// AppendChallenge writes the error response to request req (whose header ParseHeader
// accepted) that asks for credentials: ERROR-CODE code with reason, NONCE and REALM, as a 401
// or 438 must carry (RFC 8489 section 9.2.5), and returns it. It allocates nothing when out
// has room (ChallengeLen).
func AppendChallenge(out, req []byte, code int, reason, nonce, realm string) []byte {
	h, _ := ParseHeader(req)
	start := len(out)
	out = append(out, make([]byte, HeaderLen)...)
	hdr := out[start:]
	binary.BigEndian.PutUint16(hdr[0:2], MessageType(h.Method(), ClassError))
	copy(hdr[4:20], req[4:20]) // magic cookie and transaction ID
	out = appendAttr(out, uint16(stun.AttrErrorCode), 4+len(reason), func(v []byte) {
		v[2], v[3] = byte(code/100), byte(code%100)
		copy(v[4:], reason)
	})
	out = appendAttr(out, AttrNonce, len(nonce), func(v []byte) { copy(v, nonce) })
	out = appendAttr(out, AttrRealm, len(realm), func(v []byte) { copy(v, realm) })
	binary.BigEndian.PutUint16(out[start+2:start+4], uint16(len(out)-start-HeaderLen))
	return out
}

// ChallengeLen is the size AppendChallenge writes.
func ChallengeLen(reason, nonce, realm string) int {
	pad := func(n int) int { return (n + 3) &^ 3 }
	return HeaderLen + 4 + pad(4+len(reason)) + 4 + pad(len(nonce)) + 4 + pad(len(realm))
}

// appendAttr appends a TLV of n value bytes, filled by fill, zero-padded to 4 bytes.
func appendAttr(out []byte, typ uint16, n int, fill func(v []byte)) []byte {
	at := len(out)
	out = append(out, make([]byte, 4+(n+3)&^3)...)
	binary.BigEndian.PutUint16(out[at:at+2], typ)
	binary.BigEndian.PutUint16(out[at+2:at+4], uint16(n))
	fill(out[at+4 : at+4+n])
	return out
}
