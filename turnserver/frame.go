package turnserver

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
)

// STUN and ChannelData framing constants (RFC 5389 section 6, RFC 5766 section 11.4).
const (
	stunHeaderLen = 20
	chanHeaderLen = 4
	magicCookie   = 0x2112A442
	maxFrameLen   = chanHeaderLen + 0xFFFF + 3 // largest padded ChannelData frame
)

// errBadFrame means a stream carried bytes that start neither a STUN message nor ChannelData;
// the connection cannot be resynchronised, so it is closed.
var errBadFrame = errors.New("not a STUN or ChannelData frame")

// isChannelData reports whether b starts with a ChannelData header (channel 0x4000-0x7FFF).
func isChannelData(b []byte) bool {
	return len(b) >= chanHeaderLen && b[0]&0xC0 == 0x40
}

// stunHeader is the fixed part of a STUN message.
type stunHeader struct {
	typ    uint16
	length int // attribute bytes after the header
}

// method and class decode the interleaved bits of the STUN message type.
func (h stunHeader) method() uint16 {
	t := h.typ
	return t&0x000F | (t&0x00E0)>>1 | (t&0x3E00)>>2
}

func (h stunHeader) class() uint16 {
	return (h.typ>>4)&1 | (h.typ>>7)&2
}

// STUN classes and the methods the gate treats specially.
const (
	classRequest     = 0
	classIndication  = 1
	methodBinding    = 0x001
	methodAllocate   = 0x003
	methodChanBind   = 0x009
	methodConnBind   = 0x00B
	attrUsername     = 0x0006
	attrIntegrity    = 0x0008
	attrReqFamily    = 0x0017
	attrReqTransport = 0x0019
)

// parseSTUNHeader checks that b holds exactly one well-formed STUN message header whose
// declared length fits in b.
func parseSTUNHeader(b []byte) (stunHeader, bool) {
	if len(b) < stunHeaderLen || b[0]&0xC0 != 0 {
		return stunHeader{}, false
	}
	if binary.BigEndian.Uint32(b[4:8]) != magicCookie {
		return stunHeader{}, false
	}
	h := stunHeader{typ: binary.BigEndian.Uint16(b[0:2]), length: int(binary.BigEndian.Uint16(b[2:4]))}
	if h.length%4 != 0 || stunHeaderLen+h.length > len(b) {
		return stunHeader{}, false
	}
	return h, true
}

// peekInfo is what the gate needs to know about a request without a full decode.
type peekInfo struct {
	hasIntegrity bool
	username     []byte
	family       byte // REQUESTED-ADDRESS-FAMILY: 1 IPv4, 2 IPv6, 0 absent
	transport    byte // REQUESTED-TRANSPORT protocol number, 0 absent
}

// peekAttrs walks the attribute TLVs of a STUN message whose header parseSTUNHeader
// accepted. It never reads past the declared length; a truncated TLV ends the walk.
func peekAttrs(b []byte, h stunHeader) peekInfo {
	var info peekInfo
	attrs := b[stunHeaderLen : stunHeaderLen+h.length]
	for len(attrs) >= 4 {
		t := binary.BigEndian.Uint16(attrs[0:2])
		l := int(binary.BigEndian.Uint16(attrs[2:4]))
		if 4+l > len(attrs) {
			break
		}
		v := attrs[4 : 4+l]
		switch t {
		case attrUsername:
			if info.username == nil { // the first one, as pion's decoder reads it
				info.username = v
			}
		case attrIntegrity:
			info.hasIntegrity = true
		case attrReqFamily:
			if l >= 1 {
				info.family = v[0]
			}
		case attrReqTransport:
			if l >= 1 {
				info.transport = v[0]
			}
		}
		if info.hasIntegrity {
			// Attributes after MESSAGE-INTEGRITY are not covered by it (only FINGERPRINT may follow).
			break
		}
		padded := (l + 3) &^ 3
		if 4+padded > len(attrs) {
			break
		}
		attrs = attrs[4+padded:]
	}
	return info
}

// frameLen returns the total length of the stream frame whose first bytes are hdr, which
// must hold at least 4 bytes (ChannelData) or 20 (STUN). need > 0 asks for more header bytes.
// ChannelData is padded to a multiple of 4 on stream transports (RFC 5766 section 11.5).
func frameLen(hdr []byte) (n, need int, err error) {
	if len(hdr) < chanHeaderLen {
		return 0, chanHeaderLen, nil
	}
	if isChannelData(hdr) {
		l := int(binary.BigEndian.Uint16(hdr[2:4]))
		return chanHeaderLen + (l+3)&^3, 0, nil
	}
	if hdr[0]&0xC0 != 0 {
		return 0, 0, errBadFrame
	}
	if len(hdr) < stunHeaderLen {
		return 0, stunHeaderLen, nil
	}
	l := int(binary.BigEndian.Uint16(hdr[2:4]))
	if binary.BigEndian.Uint32(hdr[4:8]) != magicCookie || l%4 != 0 {
		return 0, 0, errBadFrame
	}
	return stunHeaderLen + l, 0, nil
}

// readFrame reads exactly one STUN or ChannelData frame from r into buf (grown as needed,
// never beyond maxFrameLen, the largest frame a 16-bit length allows) and returns it.
func readFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	have := 0
	want := chanHeaderLen
	for {
		// Grow only as far as the frame needs: most frames are small and a TCP client
		// should not cost the 64 KiB a maximal ChannelData would.
		if cap(buf) < want {
			nb := make([]byte, want, max(want, 2*cap(buf)))
			copy(nb, buf[:have])
			buf = nb
		}
		buf = buf[:cap(buf)]
		if _, err := io.ReadFull(r, buf[have:want]); err != nil {
			if have > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		have = want
		n, need, err := frameLen(buf[:have])
		if err != nil {
			return nil, err
		}
		if need > 0 {
			want = need
			continue
		}
		if n == have {
			return buf[:n], nil
		}
		want = n
	}
}
