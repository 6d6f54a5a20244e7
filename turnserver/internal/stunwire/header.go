// Package stunwire parses just enough of STUN (RFC 8489) and TURN ChannelData (RFC 8656) to
// route a datagram or stream frame without decoding it: the fixed header, the few attributes
// the server's admission checks need, stream framing, and the two messages the UDP fast path
// writes itself (Binding success, ChannelData). Everything here is pure and fuzzed; full
// decoding is pion/stun's job.
package stunwire

import "encoding/binary"

// Framing constants (RFC 8489 section 5, RFC 8656 section 12.4).
const (
	HeaderLen        = 20
	ChannelHeaderLen = 4
	MagicCookie      = 0x2112A442
	// MaxStreamFrame is the largest frame a stream can carry: a ChannelData header, a 16-bit
	// length of payload and up to 3 bytes of padding.
	MaxStreamFrame = ChannelHeaderLen + 0xFFFF + 3
)

// STUN classes (RFC 8489 section 5).
const (
	ClassRequest    = 0
	ClassIndication = 1
	ClassSuccess    = 2
	ClassError      = 3
)

// Methods the server treats specially (RFC 8489, RFC 8656, RFC 6062).
const (
	MethodBinding    = 0x001
	MethodAllocate   = 0x003
	MethodRefresh    = 0x004
	MethodChanBind   = 0x009
	MethodConnect    = 0x00A
	MethodConnBind   = 0x00B
	MethodPermission = 0x008
)

// IsChannelData reports whether b starts with a ChannelData header (channel 0x4000-0x7FFF).
func IsChannelData(b []byte) bool {
	return len(b) >= ChannelHeaderLen && b[0]&0xC0 == 0x40
}

// LooksLikeSTUN reports whether b starts like a STUN message: the top two bits zero and the
// magic cookie at bytes 4..8. It needs 8 bytes; HTTP and TLS never match.
func LooksLikeSTUN(b []byte) bool {
	return len(b) >= 8 && b[0]&0xC0 == 0 && binary.BigEndian.Uint32(b[4:8]) == MagicCookie
}

// Header is the fixed part of a STUN message.
type Header struct {
	Type   uint16
	Length int // attribute bytes after the header
}

// Method and Class decode the interleaved bits of the message type.
func (h Header) Method() uint16 {
	t := h.Type
	return t&0x000F | (t&0x00E0)>>1 | (t&0x3E00)>>2
}

// Class is ClassRequest, ClassIndication, ClassSuccess or ClassError.
func (h Header) Class() uint16 {
	return (h.Type>>4)&1 | (h.Type>>7)&2
}

// MessageType builds the type field from a method and a class.
func MessageType(method, class uint16) uint16 {
	return method&0x000F | (method&0x0070)<<1 | (method&0x0F80)<<2 | (class&1)<<4 | (class&2)<<7
}

// ParseHeader checks that b holds one well-formed STUN header whose declared length fits in b.
func ParseHeader(b []byte) (Header, bool) {
	if !LooksLikeSTUN(b) || len(b) < HeaderLen {
		return Header{}, false
	}
	h := Header{Type: binary.BigEndian.Uint16(b[0:2]), Length: int(binary.BigEndian.Uint16(b[2:4]))}
	if h.Length%4 != 0 || HeaderLen+h.Length > len(b) {
		return Header{}, false
	}
	return h, true
}

// TransactionID returns the 12-byte transaction ID of a message whose header parsed.
func TransactionID(b []byte) [12]byte {
	var id [12]byte
	copy(id[:], b[8:20])
	return id
}
