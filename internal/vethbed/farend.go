//go:build linux

package vethbed

import (
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// AttachPass attaches a pass-everything XDP program (native mode) to the far ends (the
// client's and the peer's interface) and keeps it until Close.
//
// Why: a veth hands frames that an XDP program on its peer sent back (XDP_TX) or
// redirected to it (XDP_REDIRECT) to a ring that only its NAPI context drains. Enabling
// GRO creates that context, and a redirect kicks it, so GRO is enough for XDP_REDIRECT;
// but the XDP_TX path (veth_xdp_flush) only kicks the peer when the peer runs an XDP
// program itself, so with GRO alone XDP_TX'ed frames wait until some later packet drains
// the ring. A real NIC has neither quirk. The program costs the far ends (the load
// generator's side) a few ns per packet, the same in every benchmark mode.
func (b *Bed) AttachPass() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "bed_pass", Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("vethbed: pass program: %w", err)
	}
	b.closers = append(b.closers, prog.Close)
	for _, e := range []struct{ ns, dev string }{{b.Client, b.ClientIf}, {b.Peer, b.PeerIf}} {
		err := b.Do(e.ns, func() error {
			ifi, err := net.InterfaceByName(e.dev)
			if err != nil {
				return err
			}
			l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: link.XDPDriverMode})
			if err != nil {
				return err
			}
			b.closers = append(b.closers, l.Close)
			return nil
		})
		if err != nil {
			return fmt.Errorf("vethbed: attach pass program to %s: %w", e.dev, err)
		}
	}
	return nil
}
