package turnserver

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"icehub/auth"
	"icehub/turnserver/internal/stunwire"
)

// recordReplies is a replier that keeps what admission answered.
type recordReplies struct{ n, max int }

func (r *recordReplies) scratch() []byte { return make([]byte, 0, answerMax) }

func (r *recordReplies) reply(b []byte, _ net.Addr) {
	r.n++
	r.max = max(r.max, len(b))
}

// FuzzAdmission feeds arbitrary datagrams to the checks every client message passes before
// pion: the header and attribute peek, MESSAGE-INTEGRITY verification under every secret,
// the refusals it answers itself (ChannelBind to a filtered peer, Allocate it cannot serve)
// and the per-source limit. It must never panic, and whatever it answers must be one
// well-formed STUN error response no larger than a small constant.
func FuzzAdmission(f *testing.F) {
	ring, err := auth.NewRing(auth.Config{Secrets: []string{testSecret1, testSecret2}})
	if err != nil {
		f.Fatal(err)
	}
	tc := baseConfig()
	tc.UDPSockets = 1
	tc.Ring, tc.Logger = ring, slog.New(slog.DiscardHandler)
	srv, err := New(tc)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = srv.Close() })
	lo := netip.MustParseAddr("127.0.0.1")
	gen := &relayAddresses{s: srv, v4: &familyRelay{bind: lo, advertised: lo}, ports: PortRange{Min: 61000, Max: 61010}}
	udp, tcp := srv.newAdmission(gen, false), srv.newAdmission(gen, true)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 5000}
	// Seeds carry a nonce minted for src, and pion's nonce is known, so the verified paths
	// (refusals, re-signing for pion) are reached.
	nonce := srv.nonces.mint(netip.MustParseAddr("127.0.0.9"), time.Now())
	srv.nonces.notePion("pion-nonce", time.Now())

	cr, err := ring.Mint("fuzz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	signed := func(method stun.Method, attrs ...stun.Setter) []byte {
		s := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		s = append(s, attrs...)
		s = append(s, stun.NewUsername(cr.Username), stun.NewRealm(tc.Realm), stun.NewNonce(nonce),
			stun.NewLongTermIntegrity(cr.Username, tc.Realm, cr.Password), stun.Fingerprint)
		return stun.MustBuild(s...).Raw
	}
	peer := func(ip string) stun.Setter { return xorPeer{ap: netip.AddrPortFrom(netip.MustParseAddr(ip), 9)} }
	f.Add(signed(stun.MethodAllocate, requestedUDP()))
	f.Add(signed(stun.MethodAllocate, rawAttr{stun.AttrRequestedTransport, []byte{6, 0, 0, 0}}))
	f.Add(signed(stun.MethodAllocate, requestedUDP(), requestedFamily(2)))
	f.Add(signed(stun.MethodChannelBind, channelNumber(0x4000), peer("10.0.0.1")))
	f.Add(signed(stun.MethodChannelBind, channelNumber(0x4000), peer("::ffff:169.254.169.254")))
	f.Add(signed(stun.MethodChannelBind, channelNumber(0x4000), peer("8.8.8.8")))
	f.Add(signed(stun.MethodCreatePermission, peer("64:ff9b::7f00:1")))
	f.Add(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP()).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add([]byte{0x40, 0x00, 0x00, 0x01, 0xAA, 0, 0, 0})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, b []byte) {
		for _, g := range []*admission{udp, tcp} {
			r := &recordReplies{}
			out, ok := g.admit(append([]byte(nil), b...), src, r)
			if r.n > 1 || r.max > 256 {
				t.Fatalf("admission answered %d times, largest %d bytes", r.n, r.max)
			}
			if ok && (r.n > 0 || len(out) > len(b)+64) {
				t.Fatalf("admitted after answering (%d) or grew %d -> %d bytes", r.n, len(b), len(out))
			}
			if ok && !stunwire.IsChannelData(out) {
				if _, parsed := stunwire.ParseHeader(out); !parsed {
					t.Fatalf("admitted %x, not STUN", out)
				}
			}
		}
	})
}
