// The hand-written JSON scanner for inbound frames (see fastDecode for why it exists).

package signal

import "bytes"

// fastMaxDepth bounds the fast path's recursion; deeper data goes to encoding/json.
const fastMaxDepth = 64

// fastDecode decodes the usual frame in one pass without reflection: an object whose keys
// and string fields carry no escapes. It validates every byte it accepts as JSON (so it
// accepts only what json.Unmarshal would, with the same result: FuzzScannerMatchesEncodingJSON)
// and reports false for anything else, leaving the verdict to encoding/json.
//
// Why it exists: encoding/json spends 3–4 µs on a 250-byte candidate frame and ~30 µs on a
// 3 KB offer, this 0.4 and 5 µs (BenchmarkDecodeFrame). With encoding/json alone the hub
// spent 25.4 µs of CPU per relayed 200-byte message against 19.7 µs (bench signaling,
// medians of 10 alternating rounds, 2026-12-01), and 91 against 50 µs per 4 KB message in
// BenchmarkRelayPingPong: over a fifth of the hub's CPU per message.
func fastDecode(b []byte, f *inFrame) bool {
	i := skipWS(b, 1)
	if i < len(b) && b[i] == '}' {
		return skipWS(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		ks, ke, ok := plainString(b, i)
		if !ok {
			return false
		}
		key := b[ks:ke]
		i = skipWS(b, ke+1)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipWS(b, i+1)
		var dst *string
		switch string(key) {
		case "type":
			dst = &f.Type
		case "room":
			dst = &f.Room
		case "to":
			dst = &f.To
		case "data":
		default:
			// encoding/json matches field names case-insensitively.
			for _, k := range [...]string{"type", "room", "to", "data"} {
				if bytes.EqualFold(key, []byte(k)) {
					return false
				}
			}
		}
		if dst != nil {
			if i >= len(b) || b[i] != '"' {
				return false // null or a non-string: encoding/json decides
			}
			vs, ve, ok := plainString(b, i)
			if !ok {
				return false
			}
			*dst = string(b[vs:ve])
			i = ve + 1
		} else {
			end := skipValue(b, i, 0)
			if end < 0 {
				return false
			}
			if string(key) == "data" {
				f.Data = b[i:end]
			}
			i = end
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return skipWS(b, i+1) == len(b)
		default:
			return false
		}
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString returns the content bounds of the string starting at b[i] == '"' when it has
// no escapes and no control characters.
func plainString(b []byte, i int) (start, end int, ok bool) {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return i + 1, j, true
		case c == '\\' || c < 0x20:
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// skipValue validates the JSON value starting at b[i] and returns the index after it, or -1.
func skipValue(b []byte, i, depth int) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		if depth >= fastMaxDepth {
			return -1
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == closer {
			return i + 1
		}
		for {
			if c == '{' {
				if i >= len(b) || b[i] != '"' {
					return -1
				}
				if i = skipString(b, i); i < 0 {
					return -1
				}
				i = skipWS(b, i)
				if i >= len(b) || b[i] != ':' {
					return -1
				}
				i = skipWS(b, i+1)
			}
			if i = skipValue(b, i, depth+1); i < 0 {
				return -1
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return -1
			}
			switch b[i] {
			case ',':
				i = skipWS(b, i+1)
			case closer:
				return i + 1
			default:
				return -1
			}
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return skipNumber(b, i)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	}
	return -1
}

func skipLiteral(b []byte, i int, lit string) int {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit)
	}
	return -1
}

// skipString validates the string starting at b[i] == '"' (UTF-8 is checked for the whole
// frame beforehand) and returns the index after its closing quote, or -1.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1
		case c < 0x20:
			return -1
		case c == '\\':
			j++
			if j >= len(b) {
				return -1
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-j < 5 {
					return -1
				}
				for _, h := range b[j+1 : j+5] {
					if !isHex(h) {
						return -1
					}
				}
				j += 4
			default:
				return -1
			}
		}
	}
	return -1
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// skipNumber validates -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i].
func skipNumber(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	digits := func(i int) int {
		j := i
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		if i = digits(i + 1); i < 0 {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i = digits(i); i < 0 {
			return -1
		}
	}
	return i
}
