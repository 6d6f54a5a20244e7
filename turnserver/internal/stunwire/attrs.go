package stunwire

import (
	"encoding/binary"

	"github.com/pion/stun/v4"
)

// Attribute types the admission checks read.
const (
	AttrErrorCode    = 0x0009
	AttrUsername     = 0x0006
	AttrIntegrity    = 0x0008
	AttrRealm        = 0x0014
	AttrNonce        = 0x0015
	AttrReqFamily    = 0x0017
	AttrReqTransport = 0x0019
	AttrFingerprint  = 0x8028
)

// Summary is what the server's checks need to know of a request without a full decode.
type Summary struct {
	HasIntegrity bool
	Username     []byte // the first USERNAME, as pion's decoder reads it
	Nonce        []byte // the first NONCE
	ErrorCode    int    // an error response's ERROR-CODE (e.g. 401), 0 absent
	Family       byte   // REQUESTED-ADDRESS-FAMILY: 1 IPv4, 2 IPv6, 0 absent
	Transport    byte   // REQUESTED-TRANSPORT protocol number, 0 absent
	// UnknownRequired is set when an attribute before MESSAGE-INTEGRITY is
	// comprehension-required and unknown to pion (the request is answered 420).
	UnknownRequired bool
}

// Summarize walks the attributes of a message whose header ParseHeader accepted. It never
// reads past the declared length; a truncated attribute ends the walk. Attributes after
// MESSAGE-INTEGRITY are not covered by it and are not read (only FINGERPRINT may follow).
func Summarize(b []byte, h Header) Summary {
	var s Summary
	attrs := b[HeaderLen : HeaderLen+h.Length]
	for len(attrs) >= 4 {
		t := binary.BigEndian.Uint16(attrs[0:2])
		l := int(binary.BigEndian.Uint16(attrs[2:4]))
		if 4+l > len(attrs) {
			break
		}
		v := attrs[4 : 4+l]
		switch t {
		case AttrUsername:
			if s.Username == nil {
				s.Username = v
			}
		case AttrNonce:
			if s.Nonce == nil {
				s.Nonce = v
			}
		case AttrIntegrity:
			s.HasIntegrity = true
		case AttrErrorCode:
			if l >= 4 {
				s.ErrorCode = int(v[2]&7)*100 + int(v[3])
			}
		case AttrReqFamily:
			if l >= 1 {
				s.Family = v[0]
			}
		case AttrReqTransport:
			if l >= 1 {
				s.Transport = v[0]
			}
		default:
			if at := stun.AttrType(t); at.Required() && !at.Known() {
				s.UnknownRequired = true
			}
		}
		if s.HasIntegrity {
			break
		}
		padded := (l + 3) &^ 3
		if 4+padded > len(attrs) {
			break
		}
		attrs = attrs[4+padded:]
	}
	return s
}

// PlainBinding reports whether a Binding request is well formed and carries only
// attributes pion accepts without an error answer (no unknown comprehension-required one),
// so that a Binding success is the right answer.
func PlainBinding(b []byte, h Header) bool {
	attrs := b[HeaderLen : HeaderLen+h.Length]
	for len(attrs) > 0 {
		if len(attrs) < 4 {
			return false
		}
		t := stun.AttrType(binary.BigEndian.Uint16(attrs[0:2]))
		l := int(binary.BigEndian.Uint16(attrs[2:4]))
		padded := (l + 3) &^ 3
		if 4+padded > len(attrs) {
			return false
		}
		if t.Required() && !t.Known() {
			return false
		}
		attrs = attrs[4+padded:]
	}
	return true
}
