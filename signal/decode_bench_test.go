package signal

import (
	"strings"
	"testing"
)

// Frames as browsers send them: a trickled candidate, an SDP offer, a join.
var benchFrames = map[string][]byte{
	"candidate": []byte(`{"type":"message","room":"call-42","to":"Q2hvb3NlIGEgcmFuZG9tIGlk","data":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 54321 typ srflx raddr 192.0.2.10 rport 54321 generation 0 ufrag 4ZcD network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"4ZcD"}}`),
	"offer":     []byte(`{"type":"message","room":"call-42","data":{"type":"offer","sdp":"` + strings.Repeat(`a=candidate:1 1 udp 2122260223 192.0.2.10 54321 typ host generation 0\r\n`, 40) + `"}}`),
	"join":      []byte(`{"type":"join","room":"call-42"}`),
}

// BenchmarkDecodeFrame compares the hub's decoder (the hand-written scanner, with
// encoding/json as its fallback) with encoding/json alone, per frame.
func BenchmarkDecodeFrame(b *testing.B) {
	for _, name := range []string{"candidate", "offer", "join"} {
		frame := benchFrames[name]
		for _, dec := range []struct {
			name string
			fn   func([]byte) (inFrame, error)
		}{{"hub", decodeFrame}, {"encoding-json", decodeFrameStd}} {
			b.Run(name+"/"+dec.name, func(b *testing.B) {
				b.SetBytes(int64(len(frame)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := dec.fn(frame); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
