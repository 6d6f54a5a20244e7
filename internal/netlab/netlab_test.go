//go:build linux

package netlab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"icehub/internal/testenv"
)

func newTestLab(t *testing.T) *Lab {
	t.Helper()
	testenv.Netns(t)
	testenv.Tool(t, "nft", "nftables")
	l, err := New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

func rootState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"-o", "link"}, {"-o", "addr"}, {"route"}, {"-6", "route"}} {
		out, err := exec.Command("ip", args...).Output()
		if err != nil {
			t.Fatal(err)
		}
		b.Write(out)
	}
	return b.String()
}

// udpEcho answers every datagram with the address it came from, as text.
func udpEcho(t *testing.T, ns *NS, addr string) {
	t.Helper()
	pc, err := ns.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(from.String()), from)
		}
	}()
}

// seenAs sends from pc to each echo address and returns the source each one saw.
func seenAs(t *testing.T, pc net.PacketConn, to ...string) []string {
	t.Helper()
	var seen []string
	buf := make([]byte, 1500)
	for _, a := range to {
		dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(a))
		var got string
		for range 10 {
			pc.WriteTo([]byte("who am i"), dst)
			pc.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
			n, _, err := pc.ReadFrom(buf)
			if err == nil {
				got = string(buf[:n])
				break
			}
		}
		seen = append(seen, got)
	}
	return seen
}

// TestNATBehaviours builds a cone, a symmetric and a 1:1 NAT and checks what an echo server
// on the Internet sees, that the root namespace is untouched, and that Close removes it all.
func TestNATBehaviours(t *testing.T) {
	before := rootState(t)
	ctx := context.Background()
	l := newTestLab(t)
	if err := l.AddInternetAddrs(ctx, "203.0.113.10/24", "203.0.113.11/24"); err != nil {
		t.Fatal(err)
	}
	udpEcho(t, l.Internet(), "203.0.113.10:7")
	udpEcho(t, l.Internet(), "203.0.113.11:7")
	echoes := []string{"203.0.113.10:7", "203.0.113.11:7"}

	for i, kind := range []NAT{Cone, Symmetric} {
		r, err := l.Router(ctx, kind.String(), []string{fmt.Sprintf("203.0.113.%d/24", 21+i)}, []string{fmt.Sprintf("192.0.2.%d/28", 16*i+1)})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.SetNAT(ctx, kind); err != nil {
			t.Fatal(err)
		}
		h, err := r.Host(ctx, kind.String()+"-h", fmt.Sprintf("192.0.2.%d/28", 16*i+2))
		if err != nil {
			t.Fatal(err)
		}
		pc, err := h.ListenPacket("udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		seen := seenAs(t, pc, echoes...)
		pc.Close()
		pub := r.Public[0].Addr()
		for _, s := range seen {
			if ap, err := netip.ParseAddrPort(s); err != nil || ap.Addr() != pub {
				t.Fatalf("%s: echo saw %q, want %s", kind, s, pub)
			}
		}
		if same := seen[0] == seen[1]; same != (kind == Cone) {
			t.Fatalf("%s: mapping toward two servers %v", kind, seen)
		}
	}

	// 1:1 NAT: the Internet reaches the private host at the public address; the host reaches
	// its own public address only with the hairpin rule.
	r, err := l.Router(ctx, "one", []string{"203.0.113.3/24"}, []string{"198.51.100.1/24"})
	if err != nil {
		t.Fatal(err)
	}
	pub, priv := netip.MustParseAddr("203.0.113.3"), netip.MustParseAddr("198.51.100.2")
	if err := r.OneToOne(ctx, pub, priv); err != nil {
		t.Fatal(err)
	}
	srv, err := r.Host(ctx, "one-h", "198.51.100.2/24")
	if err != nil {
		t.Fatal(err)
	}
	udpEcho(t, srv, "198.51.100.2:7")
	in, err := l.Internet().ListenPacket("udp4", "203.0.113.10:0")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if got := seenAs(t, in, "203.0.113.3:7")[0]; !strings.HasPrefix(got, "203.0.113.10:") {
		t.Fatalf("through the 1:1 NAT the server saw %q", got)
	}
	self, err := srv.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if got := seenAs(t, self, "203.0.113.3:7")[0]; got != "" {
		t.Fatalf("without hairpin the server reached itself at its public address: %q", got)
	}
	kept, err := r.Unturned(ctx)
	if err != nil || kept == 0 {
		t.Fatalf("the router counted %d packets to its public address from the LAN (%v)", kept, err)
	}
	if err := r.Hairpin(ctx, pub, priv, true); err != nil {
		t.Fatal(err)
	}
	// A new flow: NAT is decided on a flow's first packet, so the old one stays dropped.
	hp, _ := srv.ListenPacket("udp4", ":0")
	defer hp.Close()
	if got := seenAs(t, hp, "203.0.113.3:7")[0]; !strings.HasPrefix(got, "203.0.113.3:") {
		t.Fatalf("with hairpin the server saw %q, want its public address", got)
	}
	if n, _ := r.Unturned(ctx); n != kept {
		t.Fatalf("hairpinned packets counted as kept: %d, was %d", n, kept)
	}
	if err := r.Hairpin(ctx, pub, priv, false); err != nil {
		t.Fatal(err)
	}
	fresh, _ := srv.ListenPacket("udp4", ":0")
	defer fresh.Close()
	if got := seenAs(t, fresh, "203.0.113.3:7")[0]; got != "" {
		t.Fatalf("hairpin removed, still reached: %q", got)
	}

	if after := rootState(t); after != before {
		t.Fatalf("the root namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	names := l.Namespaces()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, n := range names {
		if strings.Contains(string(out), n.Name) {
			t.Fatalf("%s still exists after Close", n.Name)
		}
	}
}

// TestAddressesFinalAtOnce: a lab host's addresses, its IPv6 link-local one included, are
// usable as soon as Host returns. A tentative address would change a second later, and a
// browser already running there takes that change for a new network and aborts its loads.
func TestAddressesFinalAtOnce(t *testing.T) {
	if !HasIPv6() {
		t.Skip("the kernel has no IPv6: no duplicate address detection to wait for")
	}
	l := newTestLab(t)
	ctx := context.Background()
	r, err := l.Router(ctx, "r", []string{"203.0.113.21/24"}, []string{"192.0.2.1/28", "2001:db8:21::1/64"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := r.Host(ctx, "h", "192.0.2.2/28", "2001:db8:21::2/64")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*NS{h, r.NS} {
		out, err := n.Run(ctx, "ip", "-6", "addr")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "fe80::") {
			t.Fatalf("%s has no link-local address to check:\n%s", n.Short, out)
		}
		if strings.Contains(out, "tentative") {
			t.Fatalf("%s has tentative addresses, which will change under whatever runs there:\n%s", n.Short, out)
		}
	}
}

func TestOnlyDocumentationAddresses(t *testing.T) {
	for _, a := range []string{"10.0.0.1/24", "192.168.1.1/24", "8.8.8.8/32", "fd00::1/64", "203.0.112.0/23", "2001:db8::/31"} {
		if _, err := parsePrefixes([]string{a}); err == nil {
			t.Errorf("%s accepted", a)
		}
	}
	for _, a := range []string{"192.0.2.1/28", "198.51.100.2/24", "203.0.113.3/24", "2001:db8:1::2/64"} {
		if _, err := parsePrefixes([]string{a}); err != nil {
			t.Errorf("%s refused: %v", a, err)
		}
	}
}

// TestSweep: a crashed run's namespace (owner pid gone) is removed with what runs in it; a
// live lab's namespace and foreign namespaces are not.
func TestSweep(t *testing.T) {
	testenv.Netns(t)
	ctx := context.Background()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("%s%d-1-cone-h", Prefix, dead.Process.Pid) // names may hold "-"
	foreign := fmt.Sprintf("icehub-other-%d", dead.Process.Pid)
	for _, n := range []string{stale, foreign} {
		if err := ipCmd(ctx, "netns", "add", n); err != nil {
			t.Fatal(err)
		}
	}
	defer deleteNS(foreign)
	defer deleteNS(stale)
	sleeper := (&NS{Name: stale, Short: "inet"}).Command(ctx, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	// Sweep only once sleep runs inside: `ip netns exec` opens the namespace, then enters it,
	// and a sweep between the two would find nothing to kill and leave sleep in a namespace
	// that no longer has a name.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, _ := exec.Command("ip", "netns", "pids", stale).Output()
		if strings.Contains(" "+strings.Join(strings.Fields(string(out)), " ")+" ", fmt.Sprintf(" %d ", sleeper.Process.Pid)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep never showed up in %s (ip netns pids: %q)", stale, out)
		}
	}
	live := newTestLab(t) // New sweeps too; the stale one must be gone afterwards

	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), stale) {
		t.Fatalf("stale %s not swept:\n%s", stale, out)
	}
	if !strings.Contains(string(out), foreign) || !strings.Contains(string(out), live.Internet().Name) {
		t.Fatalf("sweep removed a namespace it does not own:\n%s", out)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the process inside the stale namespace still runs")
	}
	if swept, err := Sweep(ctx); err != nil || len(swept) != 0 {
		t.Fatalf("second sweep: %v %v", swept, err)
	}
}

// natSite builds router "name" of the given kind with one LAN host; i picks its addresses.
func natSite(t *testing.T, l *Lab, name string, kind NAT, i int) (*Router, *NS) {
	t.Helper()
	ctx := context.Background()
	r, err := l.Router(ctx, name, []string{fmt.Sprintf("203.0.113.%d/24", 21+i)}, []string{fmt.Sprintf("192.0.2.%d/28", 16*i+1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetNAT(ctx, kind); err != nil {
		t.Fatal(err)
	}
	h, err := r.Host(ctx, name+"-h", fmt.Sprintf("192.0.2.%d/28", 16*i+2))
	if err != nil {
		t.Fatal(err)
	}
	return r, h
}

// TestConeHolePunch: two hosts behind cone NATs, each knowing the other's mapped address
// (from an echo server, as from STUN), reach each other once both have sent: the first packet
// is dropped by the far NAT and must not make it move the far host's mapping.
func TestConeHolePunch(t *testing.T) {
	l := newTestLab(t)
	if err := l.AddInternetAddrs(context.Background(), "203.0.113.10/24"); err != nil {
		t.Fatal(err)
	}
	udpEcho(t, l.Internet(), "203.0.113.10:7")
	_, ha := natSite(t, l, "a", Cone, 0)
	_, hb := natSite(t, l, "b", Cone, 1)
	a, err := ha.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := hb.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ma, mb := seenAs(t, a, "203.0.113.10:7")[0], seenAs(t, b, "203.0.113.10:7")[0]
	toA, toB := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ma)), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(mb))

	a.WriteTo([]byte("punch"), toB) // dropped at b's NAT, but opens a's
	buf := make([]byte, 100)
	b.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, _, err := b.ReadFrom(buf); err == nil {
		t.Fatal("an unsolicited packet crossed b's NAT")
	}
	for _, hop := range []struct {
		from, to net.PacketConn
		dst      net.Addr
		want     string
	}{{b, a, toA, mb}, {a, b, toB, ma}} {
		hop.from.WriteTo([]byte("hello"), hop.dst)
		hop.to.SetReadDeadline(time.Now().Add(time.Second))
		_, from, err := hop.to.ReadFrom(buf)
		if err != nil {
			t.Fatalf("hole punching failed toward %s: %v", hop.dst, err)
		}
		if from.String() != hop.want {
			t.Fatalf("came from %s, want the sender's mapped address %s", from, hop.want)
		}
	}
}

// TestTCP443Only: behind the firewall UDP gets nowhere and TCP gets out only to port 443.
func TestTCP443Only(t *testing.T) {
	l := newTestLab(t)
	ctx := context.Background()
	if err := l.AddInternetAddrs(ctx, "203.0.113.10/24"); err != nil {
		t.Fatal(err)
	}
	udpEcho(t, l.Internet(), "203.0.113.10:7")
	for _, port := range []string{"443", "80"} {
		ln, err := l.Internet().Listen("tcp4", "203.0.113.10:"+port)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte(c.RemoteAddr().String()))
				c.Close()
			}
		}()
	}
	_, h := natSite(t, l, "fw", TCP443Only, 0)
	pc, err := h.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if got := seenAs(t, pc, "203.0.113.10:7")[0]; got != "" {
		t.Fatalf("UDP crossed the firewall: %s", got)
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := h.Dial(dctx, "tcp4", "203.0.113.10:443")
	if err != nil {
		t.Fatalf("TCP to 443: %v", err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if !strings.HasPrefix(string(got), "203.0.113.21:") {
		t.Fatalf("the server saw %q, want the NAT's address", got)
	}
	if c, err := h.Dial(dctx, "tcp4", "203.0.113.10:80"); err == nil {
		c.Close()
		t.Fatal("TCP to port 80 crossed the firewall")
	}
}
