package stunwire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
)

// ErrBadFrame means a stream carried bytes that start neither a STUN message nor
// ChannelData; a stream cannot be resynchronised after that, so it is closed.
var ErrBadFrame = errors.New("not a STUN or ChannelData frame")

// FrameLen returns the total length of the stream frame whose first bytes are hdr. need > 0
// asks for that many header bytes first (4 for ChannelData, 20 for STUN). ChannelData is
// padded to a multiple of 4 on streams (RFC 8656 section 12.5).
func FrameLen(hdr []byte) (n, need int, err error) {
	if len(hdr) < ChannelHeaderLen {
		return 0, ChannelHeaderLen, nil
	}
	if IsChannelData(hdr) {
		l := int(binary.BigEndian.Uint16(hdr[2:4]))
		return ChannelHeaderLen + (l+3)&^3, 0, nil
	}
	if hdr[0]&0xC0 != 0 {
		return 0, 0, ErrBadFrame
	}
	if len(hdr) < HeaderLen {
		return 0, HeaderLen, nil
	}
	l := int(binary.BigEndian.Uint16(hdr[2:4]))
	if binary.BigEndian.Uint32(hdr[4:8]) != MagicCookie || l%4 != 0 {
		return 0, 0, ErrBadFrame
	}
	return HeaderLen + l, 0, nil
}

// ReadFrame reads exactly one STUN or ChannelData frame from r into buf (grown as needed,
// never beyond MaxStreamFrame) and returns it.
func ReadFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	have := 0
	want := ChannelHeaderLen
	for {
		// Grow only as far as the frame needs: most frames are small, and a TCP client
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
		n, need, err := FrameLen(buf[:have])
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
