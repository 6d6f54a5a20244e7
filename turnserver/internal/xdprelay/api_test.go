//go:build linux

package xdprelay

import (
	"errors"
	"net/netip"
	"testing"
	"unsafe"
)

// These run without root: what Bind refuses, how keys are laid out, and that the verdict
// names match the program.

func TestBindingValidate(t *testing.T) {
	good := Binding{Alloc: 1, Client: netip.MustParseAddrPort("198.51.100.2:40000"),
		Listen: netip.MustParseAddrPort("198.51.100.1:3478"), Relay: netip.MustParseAddrPort("203.0.113.1:50000"),
		Peer: netip.MustParseAddrPort("203.0.113.2:60000"), Channel: 0x4000}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	bad := map[string]func(*Binding){
		"alloc 0":         func(b *Binding) { b.Alloc = 0 },
		"channel 0x3fff":  func(b *Binding) { b.Channel = 0x3fff },
		"channel 0x8000":  func(b *Binding) { b.Channel = 0x8000 },
		"wildcard listen": func(b *Binding) { b.Listen = netip.MustParseAddrPort("0.0.0.0:3478") },
		"port 0":          func(b *Binding) { b.Peer = netip.MustParseAddrPort("203.0.113.2:0") },
		"no peer":         func(b *Binding) { b.Peer = netip.AddrPort{} },
		"mixed client":    func(b *Binding) { b.Listen = netip.MustParseAddrPort("[2001:db8::1]:3478") },
	}
	for name, mutate := range bad {
		b := good
		mutate(&b)
		if err := b.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	mixed := good
	mixed.Relay, mixed.Peer = netip.MustParseAddrPort("[2001:db8::1]:50000"), netip.MustParseAddrPort("[2001:db8::2]:60000")
	if err := mixed.validate(); !errors.Is(err, ErrMixedFamily) {
		t.Errorf("mixed families: %v, want ErrMixedFamily", err)
	}
	// IPv4-mapped IPv6 is the same address as IPv4.
	mapped := good
	mapped.Client = netip.MustParseAddrPort("[::ffff:198.51.100.2]:40000")
	if mapped.normalize() != good {
		t.Errorf("normalize(%v) = %v", mapped, mapped.normalize())
	}
}

func TestEncodeNetworkOrder(t *testing.T) {
	b := Binding{Alloc: 9, Client: netip.MustParseAddrPort("198.51.100.2:4660"),
		Listen: netip.MustParseAddrPort("198.51.100.1:3478"), Relay: netip.MustParseAddrPort("203.0.113.1:50000"),
		Peer: netip.MustParseAddrPort("203.0.113.2:60000"), Channel: 0x4001}
	ck, cv, pk, pv := encode(b)
	port := ptr16(&ck.ClientPort)
	if port[0] != 0x12 || port[1] != 0x34 {
		t.Fatalf("client port bytes %x, want 1234 (network order in memory)", port[:])
	}
	if ck.ClientIp != [16]byte{198, 51, 100, 2} || ck.Family != 4 || pk.Family != 4 {
		t.Fatalf("IPv4 key layout: %v family %d", ck.ClientIp, ck.Family)
	}
	if cv.Alloc != 9 || pv.Alloc != 9 || pv.Channel != ck.Channel || pk.RelayPort != cv.RelayPort {
		t.Fatal("the two directions disagree")
	}
}

func TestVerdictNamesMatchProgram(t *testing.T) {
	spec, err := loadRelay()
	if err != nil {
		t.Fatal(err)
	}
	if n := spec.Maps[relayMapVerdicts].MaxEntries; int(n) != len(verdictNames) {
		t.Fatalf("program has %d verdicts, Go names %d", n, len(verdictNames))
	}
	if verdictNames[verdictTX] != "tx" || verdictNames[verdictRedirect] != "redirect" {
		t.Fatal("verdictTX/verdictRedirect do not point at tx/redirect")
	}
}

func TestDefaultInterfacesLoopback(t *testing.T) {
	got, err := DefaultInterfaces([]netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil || len(got) != 1 {
		t.Fatalf("DefaultInterfaces(127.0.0.1) = %v, %v", got, err)
	}
	if _, err := DefaultInterfaces([]netip.Addr{netip.MustParseAddr("192.0.2.77")}); err == nil {
		t.Fatal("an address no interface carries was accepted")
	}
}

func ptr16(p *uint16) *[2]byte { return (*[2]byte)(unsafe.Pointer(p)) }
