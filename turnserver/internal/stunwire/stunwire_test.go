package stunwire

import (
	"bufio"
	"bytes"
	"net/netip"
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
			fr, err := ReadFrame(r, buf)
			if err != nil {
				break
			}
			if len(fr) > MaxStreamFrame {
				t.Fatalf("frame of %d bytes", len(fr))
			}
			n, need, err := FrameLen(fr)
			if err != nil || need != 0 || n != len(fr) {
				t.Fatalf("frame %x: FrameLen = %d %d %v", fr, n, need, err)
			}
			total += len(fr)
			if total > len(data) {
				t.Fatalf("read %d bytes from %d", total, len(data))
			}
			buf = fr[:0]
		}
	})
}

// FuzzSummarize checks the header and attribute walk run on every request before pion sees
// it: within bounds, and agreeing with pion/stun's decoder on USERNAME and NONCE.
func FuzzSummarize(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		IsChannelData(data)
		ParseChannelData(data)
		h, ok := ParseHeader(data)
		if !ok {
			return
		}
		if HeaderLen+h.Length > len(data) {
			t.Fatalf("header length %d beyond %d bytes", h.Length, len(data))
		}
		_, _ = h.Method(), h.Class()
		if MessageType(h.Method(), h.Class()) != h.Type&0x3FFF {
			t.Fatalf("type %04x does not round-trip", h.Type)
		}
		s := Summarize(data, h)
		if len(s.Username) > h.Length || len(s.Nonce) > h.Length {
			t.Fatalf("attribute longer than the message")
		}
		PlainBinding(data, h)
		m := &stun.Message{Raw: append([]byte(nil), data[:HeaderLen+h.Length]...)}
		if m.Decode() == nil && !s.HasIntegrity {
			var u stun.Username
			if u.GetFrom(m) == nil && len(s.Username) > 0 && !bytes.Equal(u, s.Username) {
				t.Fatalf("username %q vs stun %q", s.Username, u)
			}
			var n stun.Nonce
			if n.GetFrom(m) == nil && len(s.Nonce) > 0 && !bytes.Equal(n, s.Nonce) {
				t.Fatalf("nonce %q vs stun %q", s.Nonce, n)
			}
		}
	})
}

func TestBindingSuccess(t *testing.T) {
	for _, src := range []string{"192.0.2.7:4242", "[2001:db8::1]:3478", "[::ffff:192.0.2.9]:1"} {
		ap := netip.MustParseAddrPort(src)
		req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		if err != nil {
			t.Fatal(err)
		}
		h, ok := ParseHeader(req.Raw)
		if !ok || !PlainBinding(req.Raw, h) {
			t.Fatal("plain Binding request not recognised")
		}
		out := AppendBindingSuccess(make([]byte, 0, BindingSuccessMax), req.Raw, ap)
		m := &stun.Message{Raw: out}
		if err := m.Decode(); err != nil {
			t.Fatal(err)
		}
		if m.Type != stun.BindingSuccess || m.TransactionID != req.TransactionID {
			t.Fatalf("%s: type %v tid mismatch %v", src, m.Type, m.TransactionID != req.TransactionID)
		}
		if err := stun.Fingerprint.Check(m); err != nil {
			t.Fatalf("%s: fingerprint: %v", src, err)
		}
		var xa stun.XORMappedAddress
		if err := xa.GetFrom(m); err != nil {
			t.Fatal(err)
		}
		got, _ := netip.AddrFromSlice(xa.IP)
		if got.Unmap() != ap.Addr().Unmap() || xa.Port != int(ap.Port()) {
			t.Fatalf("%s: XOR-MAPPED-ADDRESS %v", src, xa)
		}
	}
	// An unknown comprehension-required attribute is left to pion (420).
	req, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.RawAttribute{Type: 0x0077, Value: []byte{1, 2, 3, 4}})
	h, _ := ParseHeader(req.Raw)
	if PlainBinding(req.Raw, h) || !Summarize(req.Raw, h).UnknownRequired {
		t.Fatal("unknown comprehension-required attribute accepted")
	}
}

func TestMessageTypeMatchesPion(t *testing.T) {
	for _, mt := range []stun.MessageType{stun.BindingRequest, stun.BindingSuccess, stun.BindingError,
		stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse), stun.NewType(stun.MethodConnectionBind, stun.ClassSuccessResponse),
		stun.NewType(stun.MethodSend, stun.ClassIndication)} {
		if got := MessageType(uint16(mt.Method), uint16(mt.Class)); got != mt.Value() {
			t.Errorf("%v: %04x, pion %04x", mt, got, mt.Value())
		}
	}
}

func BenchmarkBindingEncode(b *testing.B) {
	req, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	out := make([]byte, 0, BindingSuccessMax)
	src := netip.MustParseAddrPort("192.0.2.1:3478")
	b.ReportAllocs()
	for b.Loop() {
		AppendBindingSuccess(out, req.Raw, src)
	}
}

func BenchmarkChannelDataFrame(b *testing.B) {
	buf := make([]byte, 1600)
	b.ReportAllocs()
	for b.Loop() {
		PutChannelHeader(buf, 0x4000, 161)
	}
}

// FuzzLooksLikeSTUN checks the classifier that routes a TLS stream on a shared port to TURN:
// nothing that starts like an HTTP request may be taken for STUN.
func FuzzLooksLikeSTUN(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		if !LooksLikeSTUN(b) {
			return
		}
		if b[0] >= 'A' && b[0] <= 'Z' {
			t.Fatalf("HTTP-looking %q taken for STUN", b)
		}
		m := &stun.Message{Raw: append([]byte(nil), b...)}
		_ = m.Decode() // must not panic on anything the router accepts
	})
}

func TestChallengeMatchesPion(t *testing.T) {
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	for _, c := range []struct {
		code   int
		reason string
	}{{401, ReasonUnauthorized}, {438, ReasonStaleNonce}} {
		out := AppendChallenge(make([]byte, 0, 128), req.Raw, c.code, c.reason, "bm9uY2U", "icehub")
		if len(out) != ChallengeLen(c.reason, "bm9uY2U", "icehub") {
			t.Fatalf("%d: %d bytes, ChallengeLen says %d", c.code, len(out), ChallengeLen(c.reason, "bm9uY2U", "icehub"))
		}
		m := &stun.Message{Raw: out}
		if err := m.Decode(); err != nil {
			t.Fatal(err)
		}
		var ec stun.ErrorCodeAttribute
		var nonce stun.Nonce
		var realm stun.Realm
		if m.Type != stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse) || m.TransactionID != req.TransactionID ||
			ec.GetFrom(m) != nil || int(ec.Code) != c.code || string(ec.Reason) != c.reason ||
			nonce.GetFrom(m) != nil || nonce.String() != "bm9uY2U" || realm.GetFrom(m) != nil || realm.String() != "icehub" {
			t.Fatalf("%d: decoded %v %v %q %q", c.code, m, ec, nonce, realm)
		}
	}
	// Nothing allocated with room in the buffer.
	buf := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() { AppendChallenge(buf, req.Raw, 438, ReasonStaleNonce, "bm9uY2U", "icehub") }); n != 0 {
		t.Fatalf("%v allocations per challenge", n)
	}
}

func TestSummarizeErrorCode(t *testing.T) {
	m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		stun.CodeStaleNonce, stun.NewNonce("n"), stun.NewRealm("r"))
	h, _ := ParseHeader(m.Raw)
	if s := Summarize(m.Raw, h); s.ErrorCode != 438 || string(s.Nonce) != "n" {
		t.Fatalf("summary %+v", s)
	}
}
