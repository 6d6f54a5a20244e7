package proxyaddr

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClient(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")}
	proxy := netip.MustParseAddr("10.0.0.5")
	stranger := netip.MustParseAddr("198.51.100.9")
	for _, tc := range []struct {
		name   string
		peer   netip.Addr
		header string
		h      http.Header
		want   string
	}{
		{"untrusted peer: header ignored", stranger, XForwardedFor,
			http.Header{"X-Forwarded-For": {"203.0.113.1"}}, "198.51.100.9"},
		{"trusted peer, XFF", proxy, XForwardedFor,
			http.Header{"X-Forwarded-For": {"203.0.113.1"}}, "203.0.113.1"},
		{"client-written entries left of the first untrusted are never read", proxy, XForwardedFor,
			http.Header{"X-Forwarded-For": {"1.1.1.1, 2.2.2.2, 203.0.113.1"}}, "203.0.113.1"},
		{"trusted hops are walked through", proxy, XForwardedFor,
			http.Header{"X-Forwarded-For": {"1.1.1.1, 203.0.113.1, 10.1.1.1", "10.2.2.2"}}, "203.0.113.1"},
		{"ports and brackets", proxy, XForwardedFor,
			http.Header{"X-Forwarded-For": {"[2001:db8::1]:4711"}}, "2001:db8::1"},
		{"v4 with port", proxy, XForwardedFor,
			http.Header{"X-Forwarded-For": {"203.0.113.1:5555"}}, "203.0.113.1"},
		{"garbage stops at the proxy that wrote it", proxy, XForwardedFor,
			http.Header{"X-Forwarded-For": {"203.0.113.1, unknown, 10.1.1.1"}}, "10.1.1.1"},
		{"no header: the proxy", proxy, XForwardedFor, http.Header{}, "10.0.0.5"},
		{"the other header is not believed", proxy, XForwardedFor,
			http.Header{"Forwarded": {"for=203.0.113.99"}}, "10.0.0.5"},
		{"header off", proxy, "", http.Header{"X-Forwarded-For": {"203.0.113.1"}}, "10.0.0.5"},
		{"Forwarded", proxy, Forwarded,
			http.Header{"Forwarded": {`for=192.0.2.43, for="[2001:db8:cafe::17]:4711";proto=https`}}, "2001:db8:cafe::17"},
		{"Forwarded, quoted separators stay inside their value", proxy, Forwarded,
			http.Header{"Forwarded": {`for="1.1.1.1,for=9.9.9.9";by=x, For=203.0.113.2;proto=http`}}, "203.0.113.2"},
		{"Forwarded, XFF not believed", proxy, Forwarded,
			http.Header{"X-Forwarded-For": {"203.0.113.99"}, "Forwarded": {"for=203.0.113.2"}}, "203.0.113.2"},
		{"Forwarded, element without for stops", proxy, Forwarded,
			http.Header{"Forwarded": {"for=203.0.113.2, proto=https"}}, "10.0.0.5"},
		{"Forwarded, obfuscated stops", proxy, Forwarded,
			http.Header{"Forwarded": {"for=203.0.113.2, for=_hidden"}}, "10.0.0.5"},
		{"IPv4-mapped peer is trusted as IPv4", netip.MustParseAddr("::ffff:10.0.0.5"), XForwardedFor,
			http.Header{"X-Forwarded-For": {"203.0.113.1"}}, "203.0.113.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Client(tc.peer, tc.h, tc.header, trusted); got.String() != tc.want {
				t.Fatalf("Client = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestCanonicalHeader(t *testing.T) {
	for in, want := range map[string]string{"x-forwarded-for": XForwardedFor, "FORWARDED": Forwarded, "": ""} {
		if got, ok := CanonicalHeader(in); !ok || got != want {
			t.Errorf("CanonicalHeader(%q) = %q, %v", in, got, ok)
		}
	}
	if _, ok := CanonicalHeader("X-Real-IP"); ok {
		t.Error("X-Real-IP accepted")
	}
}
