package signal

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// The test clients connect from 127.0.0.1: a trusted proxy when ProxyFrom lists it.
var loopbackProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

// dialAs opens /ws with header hdr set to value and returns the HTTP status (101 on success).
func dialAs(t *testing.T, e *testEnv, hdr, value string) int {
	t.Helper()
	conn, resp, err := e.dialRaw(t, "", http.Header{hdr: {value}})
	if err == nil {
		t.Cleanup(func() { _ = conn.Close() })
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("dial with %s: %s: %v", hdr, value, err)
	}
	return resp.StatusCode
}

// Behind a reverse proxy in signal.proxy_from, signal.max_conns_per_ip counts each client
// its X-Forwarded-For (or Forwarded, when that is the header named) says, not the proxy.
func TestForwardedClientsHaveTheirOwnConnLimit(t *testing.T) {
	for _, tc := range []struct {
		header        string
		alice, bob    string
		aliceViaOther string // what a client writes itself before the proxy's entry
	}{
		{"X-Forwarded-For", "192.0.2.1", "192.0.2.2", "198.51.100.7, 192.0.2.1"},
		{"Forwarded", "for=192.0.2.1;proto=https", `for="[2001:db8::2]:4711"`, "for=198.51.100.7, for=192.0.2.1"},
	} {
		t.Run(tc.header, func(t *testing.T) {
			e := newEnv(t, time.Hour, func(s *Settings) {
				s.MaxConnsPerIP = 1
				s.ProxyFrom = loopbackProxy
				s.ClientIPHeader = tc.header
			})
			if code := dialAs(t, e, tc.header, tc.alice); code != http.StatusSwitchingProtocols {
				t.Fatalf("alice: %d", code)
			}
			if code := dialAs(t, e, tc.header, tc.bob); code != http.StatusSwitchingProtocols {
				t.Fatalf("bob, behind the same proxy: %d", code)
			}
			// Alice again, with an address of her choosing in front: still alice, at her cap.
			if code := dialAs(t, e, tc.header, tc.aliceViaOther); code != http.StatusTooManyRequests {
				t.Fatalf("alice's second connection: %d, want 429", code)
			}
		})
	}
}

// From a source not in signal.proxy_from, forwarding headers are ignored: every connection
// counts against the address it comes from.
func TestForwardedHeadersFromOthersIgnored(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) {
		s.MaxConnsPerIP = 1
		s.ProxyFrom = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	if code := dialAs(t, e, "X-Forwarded-For", "192.0.2.1"); code != http.StatusSwitchingProtocols {
		t.Fatalf("first: %d", code)
	}
	if code := dialAs(t, e, "X-Forwarded-For", "192.0.2.2"); code != http.StatusTooManyRequests {
		t.Fatalf("second, claiming another address: %d, want 429", code)
	}
}

// The header the proxies do not maintain is not believed, even from a trusted proxy: a
// client of an X-Forwarded-For proxy cannot pick its address with Forwarded.
func TestOtherForwardingHeaderNotBelieved(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) {
		s.MaxConnsPerIP = 1
		s.ProxyFrom = loopbackProxy // ClientIPHeader stays X-Forwarded-For
	})
	if code := dialAs(t, e, "Forwarded", "for=192.0.2.1"); code != http.StatusSwitchingProtocols {
		t.Fatalf("first: %d", code)
	}
	if code := dialAs(t, e, "Forwarded", "for=192.0.2.2"); code != http.StatusTooManyRequests {
		t.Fatalf("second, with another Forwarded: %d, want 429", code)
	}
}

// The /api rate limit is per forwarded client too.
func TestForwardedClientsHaveTheirOwnAPIRate(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) {
		s.MessagesPerSecond, s.MessageBurst = 0.01, 1
		s.ProxyFrom = loopbackProxy
	})
	get := func(client string) int {
		req, _ := http.NewRequest("GET", e.srv.URL+"/api/ice-servers", nil)
		req.Header.Set("X-Forwarded-For", client)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("192.0.2.1"); code != 200 {
		t.Fatalf("alice: %d", code)
	}
	if code := get("192.0.2.1"); code != http.StatusTooManyRequests {
		t.Fatalf("alice again: %d, want 429", code)
	}
	if code := get("192.0.2.2"); code != 200 {
		t.Fatalf("bob, behind the same proxy: %d", code)
	}
}

func TestClientIPHeaderValidated(t *testing.T) {
	s := DefaultSettings()
	s.ClientIPHeader = "X-Real-IP"
	if _, err := newPolicy(s, nil); err == nil {
		t.Fatal("client_ip_header X-Real-IP accepted")
	}
}
