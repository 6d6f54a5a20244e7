package turnserver

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/pion/stun/v4"
)

func seedFrames(f *testing.F) {
	bind := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	alloc := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.NewUsername("1700000000:alice"), stun.NewRealm("icehub"), stun.NewNonce("n"),
		stun.MessageIntegrity("key"), stun.Fingerprint)
	f.Add(bind.Raw)
	f.Add(alloc.Raw)
	f.Add([]byte{0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0})         // ChannelData, padded
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff})                     // ChannelData claiming 64 KiB
	f.Add(append(append([]byte{}, bind.Raw...), bind.Raw...)) // two frames back to back
	f.Add([]byte{0x80, 1, 2, 3})                              // garbage
	f.Add([]byte{})
}

// FuzzFrame feeds arbitrary streams to the TCP frame splitter: it must never panic, never
// return a frame longer than the input, and every frame must be the length it declares.
func FuzzFrame(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		var buf []byte
		total := 0
		for {
			fr, err := readFrame(r, buf)
			if err != nil {
				break
			}
			if len(fr) > maxFrameLen {
				t.Fatalf("frame of %d bytes", len(fr))
			}
			n, need, err := frameLen(fr)
			if err != nil || need != 0 || n != len(fr) {
				t.Fatalf("frame %x: frameLen = %d %d %v", fr, n, need, err)
			}
			total += len(fr)
			if total > len(data) {
				t.Fatalf("read %d bytes from %d", total, len(data))
			}
			buf = fr[:0]
		}
	})
}

// FuzzPeek checks the STUN header and attribute walk the gate runs on every datagram.
func FuzzPeek(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		isChannelData(data)
		h, ok := parseSTUNHeader(data)
		if !ok {
			return
		}
		if stunHeaderLen+h.length > len(data) {
			t.Fatalf("header length %d beyond %d bytes", h.length, len(data))
		}
		_ = h.method()
		_ = h.class()
		info := peekAttrs(data, h)
		if len(info.username) > h.length {
			t.Fatalf("username longer than the message")
		}
		// When stun itself decodes the message, both must agree on USERNAME.
		m := &stun.Message{Raw: append([]byte(nil), data[:stunHeaderLen+h.length]...)}
		if m.Decode() == nil && !info.hasIntegrity {
			var u stun.Username
			if u.GetFrom(m) == nil && !bytes.Equal(u, info.username) && len(info.username) > 0 {
				t.Fatalf("username %q vs stun %q", info.username, u)
			}
		}
	})
}
