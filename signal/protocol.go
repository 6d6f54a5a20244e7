package signal

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// Stable error codes carried in the `code` field of error frames; clients branch on them.
const (
	CodeBadJSON            = "bad-json"
	CodeUnknownType        = "unknown-type"
	CodeBadRoom            = "bad-room"
	CodeNotMember          = "not-member"
	CodeBadTarget          = "bad-target"
	CodeTooManyRooms       = "too-many-rooms"
	CodeAlreadyJoined      = "already-joined"
	CodeRateLimited        = "rate-limited"
	CodeFrameTooLarge      = "frame-too-large"
	CodeClusterUnavailable = "cluster-unavailable"
	CodeBadData            = "bad-data"
	CodeBinaryUnsupported  = "binary-unsupported"
	CodeInternal           = "internal"
)

// maxRoomLen bounds room names; the charset keeps them safe in logs, Redis keys and URLs.
const maxRoomLen = 64

// inFrame is a decoded client frame. Data stays raw: the hub relays it byte for byte and
// never parses it a second time.
type inFrame struct {
	Type string          `json:"type"`
	Room string          `json:"room"`
	To   string          `json:"to"`
	Data json.RawMessage `json:"data"`
}

var errNotUTF8 = errors.New("frame is not valid UTF-8")

// decodeFrame parses one client text frame. Invalid UTF-8 is refused here because relaying
// it would make a browser recipient fail its own WebSocket. f.Data may alias b.
func decodeFrame(b []byte) (inFrame, error) {
	var f inFrame
	if !utf8.Valid(b) {
		return f, errNotUTF8
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return f, errors.New("frame must be a JSON object")
	}
	if fastDecode(b, &f) {
		return f, nil
	}
	// Anything the fast path does not take (escapes, nulls, odd key case, deep nesting,
	// invalid JSON) gets encoding/json's exact semantics and errors.
	f = inFrame{}
	if err := json.Unmarshal(b, &f); err != nil {
		return inFrame{}, err
	}
	return f, nil
}

// validRoom reports whether name is 1–64 of [A-Za-z0-9_.-].
func validRoom(name string) bool {
	if len(name) == 0 || len(name) > maxRoomLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// hasData reports whether a message carries a payload; JSON null counts as none.
func hasData(d json.RawMessage) bool {
	d = bytes.TrimSpace(d)
	return len(d) > 0 && !bytes.Equal(d, []byte("null"))
}

// ICEServer is one RTCIceServer entry as browsers take it.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// welcomeFrame greets every connection. Resume is the session's resume token (absent when
// resume is off), ResumeWindow how long after losing the connection it works, in seconds;
// Resumed says whether this connection continues an earlier session, whose Rooms follow.
type welcomeFrame struct {
	Type         string      `json:"type"`
	ID           string      `json:"id"`
	ICEServers   []ICEServer `json:"iceServers"`
	TTL          int64       `json:"ttl"`
	Resume       string      `json:"resume,omitempty"`
	ResumeWindow int64       `json:"resume_window"`
	Resumed      bool        `json:"resumed"`
	Rooms        []string    `json:"rooms"`
}

type iceServersFrame struct {
	Type       string      `json:"type"`
	ICEServers []ICEServer `json:"iceServers"`
	TTL        int64       `json:"ttl"`
}

type joinedFrame struct {
	Type  string   `json:"type"`
	Room  string   `json:"room"`
	ID    string   `json:"id"`
	Peers []string `json:"peers"`
}

type peerFrame struct {
	Type string `json:"type"`
	Room string `json:"room"`
	ID   string `json:"id,omitempty"`
}

// errorFrame names the offending frame's type in Request because Type is already "error".
type errorFrame struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Room    string `json:"room,omitempty"`
	Request string `json:"request,omitempty"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only fixed struct types reach here; failing would be a programming error.
		panic(err)
	}
	return b
}

// messageFrame builds the relayed message by hand so data is copied as is: json.Marshal
// would re-scan and compact it.
func messageFrame(room, from string, data json.RawMessage) []byte {
	b := make([]byte, 0, len(data)+len(room)+len(from)+48)
	b = append(b, `{"type":"message","room":`...)
	b = appendJSONString(b, room)
	b = append(b, `,"from":`...)
	b = appendJSONString(b, from)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// appendJSONString appends s quoted as json.Marshal would; room names and peer ids never
// need escaping, anything else goes through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return append(b, mustJSON(s)...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
