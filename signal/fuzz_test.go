package signal

import (
	"bytes"
	"encoding/json"
	"errors"
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

// decodeFrameStd is decodeFrame with encoding/json alone: the reference the hand-written
// scanner must agree with.
func decodeFrameStd(b []byte) (inFrame, error) {
	var f inFrame
	if !utf8.Valid(b) {
		return f, errNotUTF8
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return f, errors.New("frame must be a JSON object")
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return inFrame{}, err
	}
	return f, nil
}

func sameFrame(a, b inFrame) bool {
	return a.Type == b.Type && a.Room == b.Room && a.To == b.To && bytes.Equal(a.Data, b.Data)
}

// FuzzScannerMatchesEncodingJSON decodes every input both ways, with the hub's decoder and
// with encoding/json alone, and requires the same frame or a refusal from both; and whatever
// the fast scanner accepts on its own, encoding/json must accept with the same result.
func FuzzScannerMatchesEncodingJSON(f *testing.F) {
	for _, s := range []string{
		`{"type":"message","room":"r","data":{"sdp":"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n"}}`,
		`{"type":"message","room":"r","to":"AAAAAAAAAAAAAAAAAAAAAA","data":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMid":"0"}}`,
		`{"TYPE":"join","room":"r"}`, `{"type":"join","Room":"r"}`, `{"type":"join","room":null}`,
		`{"type":"join","room":"r","room":"s"}`, `{"data":1,"data":[2]}`, `{"type":"\u006aoin"}`,
		`{"type":"join",}`, `{"type" : "join" , "room" : "r" }`, ` {"type":"join"} `, "{\"type\":\"j\toin\"}",
		`{"type":"message","data":-0.0e+1}`, `{"type":"message","data":01}`, `{"type":"message","data":1.}`,
		`{"type":"message","data":"\ud800"}`, `{"type":"message","data":tru}`, `{"x":{"y":[{"z":{}}]}}`,
		`{"type":"message","data":{"a":1}}garbage`, `{}`, `{ }`, `{"to":5}`, `{"type":["join"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := decodeFrame(b)
		want, werr := decodeFrameStd(b)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("%q: hub decoder err %v, encoding/json err %v", b, gerr, werr)
		}
		if gerr == nil && !sameFrame(got, want) {
			t.Fatalf("%q: hub decoder %+v, encoding/json %+v", b, got, want)
		}
		tb := bytes.TrimSpace(b)
		if !utf8.Valid(tb) || len(tb) == 0 || tb[0] != '{' {
			return
		}
		var fast inFrame
		if !fastDecode(tb, &fast) {
			return // left to encoding/json
		}
		var std inFrame
		if err := json.Unmarshal(tb, &std); err != nil {
			t.Fatalf("%q: the scanner accepted what encoding/json refuses (%v)", tb, err)
		}
		if !sameFrame(fast, std) {
			t.Fatalf("%q: scanner %+v, encoding/json %+v", tb, fast, std)
		}
	})
}
