package turnserver

import (
	"net/netip"
	"testing"
)

func TestPeerFilterDefaults(t *testing.T) {
	f := NewPeerFilter(nil, nil)
	cases := []struct {
		ip     string
		ok     bool
		range_ string
	}{
		{"127.0.0.1", false, "loopback"},
		{"127.255.0.9", false, "loopback"},
		{"10.0.0.1", false, "private"},
		{"172.16.5.4", false, "private"},
		{"192.168.1.1", false, "private"},
		{"100.64.0.1", false, "cgnat"},
		{"169.254.169.254", false, "link-local"},
		{"224.0.0.251", false, "multicast"},
		{"239.255.255.250", false, "multicast"},
		{"0.0.0.0", false, "this-network"},
		{"0.1.2.3", false, "this-network"},
		{"240.0.0.1", false, "reserved"},
		{"255.255.255.255", false, "broadcast"},
		{"192.0.2.1", false, "documentation"},
		{"198.18.0.1", false, "benchmarking"},
		{"192.0.0.8", false, "ietf-protocol"},
		{"::1", false, "loopback"},
		{"::", false, "unspecified"},
		{"fc00::1", false, "unique-local"},
		{"fd12:3456::1", false, "unique-local"},
		{"fe80::1", false, "link-local"},
		{"ff02::1", false, "multicast"},
		{"2001:db8::1", false, "documentation"},
		{"::ffff:127.0.0.1", false, "loopback"},
		{"::ffff:10.1.2.3", false, "private"},
		{"::ffff:169.254.169.254", false, "link-local"},
		{"64:ff9b::7f00:1", false, "nat64-loopback"},
		{"64:ff9b::a9fe:a9fe", false, "nat64-link-local"},
		{"2002:7f00:1::1", false, "6to4-loopback"},
		{"2002:c0a8:101::1", false, "6to4-private"},
		{"5f00::1", false, "srv6-sid"},
		{"::ffff:0:7f00:1", false, "siit"},
		{"::ffff:0:808:808", false, "siit"},
		{"100:0:0:1::5", false, "dummy"},
		{"100::1", false, "discard"},
		{"192.31.196.1", false, "as112"},
		{"192.175.48.6", false, "as112"},
		{"192.52.193.1", false, "amt"},
		{"2620:4f:8000::1", false, "as112"},
		{"2001:1::2", false, "ietf-protocol"}, // TURN anycast
		{"8.8.8.8", true, ""},
		{"1.1.1.1", true, ""},
		{"::ffff:8.8.8.8", true, ""},
		{"64:ff9b::808:808", true, ""},
		{"2002:808:808::1", true, ""},
		{"2606:4700::1111", true, ""},
		{"2001:4860:4860::8888", true, ""},
	}
	for _, c := range cases {
		ok, name := f.Check(netip.MustParseAddr(c.ip))
		if ok != c.ok || name != c.range_ {
			t.Errorf("Check(%s) = %v %q, want %v %q", c.ip, ok, name, c.ok, c.range_)
		}
		if f.Allowed(netip.MustParseAddr(c.ip)) != c.ok {
			t.Errorf("Allowed(%s) != %v", c.ip, c.ok)
		}
	}
}

func TestPeerFilterAllowDeny(t *testing.T) {
	f := NewPeerFilter(
		[]netip.Prefix{mustPrefix("127.0.0.1"), mustPrefix("10.0.0.0/8"), mustPrefix("::ffff:192.168.0.0/112")},
		[]netip.Prefix{mustPrefix("10.9.0.0/16"), mustPrefix("8.8.8.0/24"), mustPrefix("2606:4700::/32")},
	)
	cases := []struct {
		ip string
		ok bool
	}{
		{"127.0.0.1", true},        // opened by allow_peers
		{"::ffff:127.0.0.1", true}, // mapped form of an allowed address
		{"64:ff9b::7f00:1", true},  // NAT64 form of an allowed address
		{"127.0.0.2", false},       // rest of loopback stays closed
		{"10.1.2.3", true},         // allowed range
		{"10.9.1.1", false},        // deny_peers wins over allow_peers
		{"192.168.3.4", true},      // allow written as a mapped prefix
		{"8.8.8.8", false},         // deny_peers closes a public range
		{"::ffff:8.8.8.8", false},  // and its mapped form
		{"2606:4700::1111", false}, // IPv6 deny
		{"1.1.1.1", true},          // untouched public
		{"169.254.169.254", false}, // untouched default deny
	}
	for _, c := range cases {
		if got := f.Allowed(netip.MustParseAddr(c.ip)); got != c.ok {
			t.Errorf("Allowed(%s) = %v, want %v", c.ip, got, c.ok)
		}
	}
	if _, name := f.Check(netip.MustParseAddr("10.9.1.1")); name != "deny_peers" {
		t.Errorf("deny_peers refusal named %q", name)
	}
	if f.Allowed(netip.Addr{}) {
		t.Error("invalid address allowed")
	}
}
