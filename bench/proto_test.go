//go:build linux

package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

func TestRESTPasswordKnownVector(t *testing.T) {
	// The vector the auth package and coturn's turnutils_uclient -W agree on.
	if got := restPassword("north-secret", "1700003600:alice"); got != "Ji4axghh2/aljHmsPgH9mtDGVLw=" {
		t.Fatalf("password = %q", got)
	}
	u, p := restCredentials("north-secret", "alice", time.Unix(1700003600, 0))
	if u != "1700003600:alice" || p != "Ji4axghh2/aljHmsPgH9mtDGVLw=" {
		t.Fatalf("credentials = %q, %q", u, p)
	}
}

func TestChannelDataRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 3, 4, 5, 16, 159, 160, 1200} {
		payload := bytes.Repeat([]byte{0xAB}, n)
		buf := make([]byte, channelDataLen(n))
		m := encodeChannelData(buf, 0x4001, payload)
		if m != len(buf) || m%4 != 0 {
			t.Fatalf("n=%d: wrote %d, buffer %d", n, m, len(buf))
		}
		if buf[0] != 0x40 || buf[1] != 0x01 || int(buf[2])<<8|int(buf[3]) != n {
			t.Fatalf("n=%d: header % x", n, buf[:4])
		}
		for _, b := range buf[4+n:] {
			if b != 0 {
				t.Fatalf("n=%d: padding not zero: % x", n, buf[4+n:])
			}
		}
		ch, got, err := decodeChannelData(buf[:m])
		if err != nil || ch != 0x4001 || !bytes.Equal(got, payload) {
			t.Fatalf("n=%d: decode = %#x, %d bytes, %v", n, ch, len(got), err)
		}
	}
}

func TestDecodeChannelDataRejects(t *testing.T) {
	bind := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	for name, b := range map[string][]byte{
		"short":            {0x40, 0x00, 0x00},
		"stun message":     bind.Raw,
		"length too large": {0x40, 0x00, 0x00, 0x08, 1, 2, 3, 4},
		"channel 0x8000":   {0x80, 0x00, 0x00, 0x00},
	} {
		if _, _, err := decodeChannelData(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The long-term key is MD5(username:realm:password) and goes in last, so the server can
// check it; pion's own checker validating our message proves the attribute order and key.
func TestLongTermRequestVerifies(t *testing.T) {
	lt := longTerm{username: "1700003600:alice", password: "Ji4axghh2/aljHmsPgH9mtDGVLw="}
	challenge := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		stun.CodeUnauthorized, stun.NewRealm("example.org"), stun.NewNonce("abc123"))
	if err := lt.learn(challenge); err != nil {
		t.Fatal(err)
	}
	req, err := newRequest(stun.MethodAllocate, lt.setters(requestedTransportUDP{}, lifetime(600))...)
	if err != nil {
		t.Fatal(err)
	}
	dec := &stun.Message{Raw: append([]byte(nil), req.Raw...)}
	if err := dec.Decode(); err != nil {
		t.Fatal(err)
	}
	key := stun.NewLongTermIntegrity("1700003600:alice", "example.org", "Ji4axghh2/aljHmsPgH9mtDGVLw=")
	if err := key.Check(dec); err != nil {
		t.Fatalf("integrity: %v", err)
	}
	var nonce stun.Nonce
	if err := nonce.GetFrom(dec); err != nil || string(nonce) != "abc123" {
		t.Fatalf("nonce %q, %v", nonce, err)
	}
	if v, err := dec.Get(stun.AttrRequestedTransport); err != nil || v[0] != 17 {
		t.Fatalf("REQUESTED-TRANSPORT % x, %v", v, err)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * 10 * time.Microsecond) // 10 µs .. 10 ms
	}
	check := func(q float64, want time.Duration) {
		got := h.quantile(q)
		if d := float64(got-want) / float64(want); d < -0.05 || d > 0.05 {
			t.Errorf("q%.2f = %v, want ≈ %v", q, got, want)
		}
	}
	check(0.5, 5*time.Millisecond)
	check(0.99, 9900*time.Microsecond)
	for us := uint64(0); us < 1<<24; us = us*9/8 + 1 {
		if v := histValue(histBucket(us)); v > us || float64(us-v) > 0.04*float64(us)+1 {
			t.Fatalf("bucket of %d µs starts at %d", us, v)
		}
	}
}

func TestParseRates(t *testing.T) {
	got, err := parseRates("10k, 25000,1K")
	if err != nil || len(got) != 3 || got[0] != 10000 || got[1] != 25000 || got[2] != 1000 {
		t.Fatalf("%v %v", got, err)
	}
	if _, err := parseRates("10x"); err == nil {
		t.Fatal("10x accepted")
	}
}

// The allocation driver builds its requests by hand; pion/stun must read them as a server
// would, with the MESSAGE-INTEGRITY verifying under the long-term key.
func TestHandBuiltRequestsVerify(t *testing.T) {
	w := &allocWorker{username: "1700003600:alice", password: "Ji4axghh2/aljHmsPgH9mtDGVLw=", nonce: []byte("abc12")}
	w.learnRealm("example.org")
	copy(w.txid[:], "0123456789ab")
	key := stun.NewLongTermIntegrity(w.username, w.realm, w.password)
	for _, tc := range []struct {
		name   string
		method uint16
		auth   bool
		attr   stun.AttrType
		want   []byte
	}{
		{"bare Allocate", stunAllocate, false, stun.AttrRequestedTransport, []byte{17, 0, 0, 0}},
		{"Allocate", stunAllocate, true, stun.AttrRequestedTransport, []byte{17, 0, 0, 0}},
		{"Refresh 0", stunRefresh, true, stun.AttrLifetime, []byte{0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &stun.Message{Raw: w.appendRequest(nil, tc.method, tc.auth)}
			if err := m.Decode(); err != nil {
				t.Fatal(err)
			}
			if m.Type.Method != stun.Method(tc.method) || m.Type.Class != stun.ClassRequest || string(m.TransactionID[:]) != "0123456789ab" {
				t.Fatalf("type %v, transaction %q", m.Type, m.TransactionID)
			}
			if v, err := m.Get(tc.attr); err != nil || !bytes.Equal(v, tc.want) {
				t.Fatalf("%v = % x, %v", tc.attr, v, err)
			}
			_, hasMI := m.Attributes.Get(stun.AttrMessageIntegrity)
			if hasMI != tc.auth {
				t.Fatalf("MESSAGE-INTEGRITY present %v, want %v", hasMI, tc.auth)
			}
			if tc.auth {
				if err := key.Check(m); err != nil {
					t.Fatalf("integrity: %v", err)
				}
				var nonce stun.Nonce
				if err := nonce.GetFrom(m); err != nil || string(nonce) != "abc12" {
					t.Fatalf("nonce %q, %v", nonce, err)
				}
			}
		})
	}
}

func TestParseReplyReadsChallenge(t *testing.T) {
	var txid [12]byte
	copy(txid[:], "0123456789ab")
	m := stun.MustBuild(stun.NewTransactionIDSetter(txid), stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		stun.CodeUnauthorized, stun.NewRealm("example.org"), stun.NewNonce("n0nce"), stun.Fingerprint)
	r, ok := parseReply(m.Raw, &txid)
	if !ok || r.typ != 0x0113 || r.code != 401 || string(r.realm) != "example.org" || string(r.nonce) != "n0nce" {
		t.Fatalf("parseReply = %+v, %v", r, ok)
	}
	other := txid
	other[0] ^= 1
	if _, ok := parseReply(m.Raw, &other); ok {
		t.Fatal("an answer to another transaction was taken")
	}
	if _, ok := parseReply(m.Raw[:30], &txid); ok {
		t.Fatal("a truncated answer was taken")
	}
}
