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
