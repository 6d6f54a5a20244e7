package signal

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeFrame checks that decoding never panics, and that whatever it accepts relays as
// valid JSON with data byte for byte.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"join","room":"r"}`,
		`{"type":"leave","room":"r"}`,
		`{"type":"message","room":"r","data":{"sdp":"v=0"}}`,
		`{"type":"message","room":"r","to":"abc","data":[1,2,{"x":null}]}`,
		`{"type":"ice-servers"}`,
		`{"type":"message","room":"r","data":"\u00e9\ud83d\ude00"}`,
		`[[[[[[[[[[[[]]]]]]]]]]]]`,
		`{"type":"message","data":` + string(make([]byte, 10)) + `}`,
		"{\"type\":\"message\",\"data\":\"\xff\"}",
		`{"type":1}`, `null`, ``, `{`, ` {"type":"join"} `,
		`{"type":"join","room":"r","type":"leave"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			return
		}
		if !utf8.Valid(b) {
			t.Fatalf("accepted invalid UTF-8")
		}
		_ = validRoom(fr.Room)
		if hasData(fr.Data) {
			out := messageFrame("room", "from", fr.Data)
			if !json.Valid(out) {
				t.Fatalf("relayed frame is not JSON: %q", out)
			}
			var back struct {
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(out, &back); err != nil || string(back.Data) != string(fr.Data) {
				t.Fatalf("data changed in transit: %q -> %q", fr.Data, back.Data)
			}
		}
	})
}
