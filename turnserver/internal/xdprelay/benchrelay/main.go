//go:build linux

// Command benchrelay is the stand-in TURN server `go run ./bench xdp` measures until icehub
// itself wires the offload: pion's TURN server on one UDP socket, TURN REST credentials,
// and, with -xdp, package xdprelay driven from pion's channel and allocation events (the
// wiring icehub's turnserver will do). It is a benchmark tool, not a server to deploy: no
// peer filter, no quotas.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/turn/v5"

	"icehub/turnserver/internal/xdprelay"
)

func main() {
	listen := flag.String("listen", "198.51.100.1:3478", "UDP listen address (concrete IP: the offload matches it)")
	relayIP := flag.String("relay-ip", "203.0.113.1", "relay address")
	realm := flag.String("realm", "example.org", "realm")
	secret := flag.String("secret", "", "TURN REST shared secret")
	useXDP := flag.Bool("xdp", false, "relay ChannelData in the kernel (package xdprelay)")
	flag.Parse()
	if err := run(*listen, *relayIP, *realm, *secret, *useXDP); err != nil {
		log.Fatal("benchrelay: ", err)
	}
}

func run(listen, relayIP, realm, secret string, useXDP bool) error {
	laddr, err := netip.ParseAddrPort(listen)
	if err != nil {
		return err
	}
	rip, err := netip.ParseAddr(relayIP)
	if err != nil {
		return err
	}
	conn, err := net.ListenPacket("udp", listen)
	if err != nil {
		return err
	}
	nw, err := stdnet.NewNet()
	if err != nil {
		return err
	}
	var events turn.EventHandler
	if useXDP {
		ifaces, err := xdprelay.DefaultInterfaces([]netip.Addr{laddr.Addr(), rip})
		if err != nil {
			return err
		}
		off, err := xdprelay.Open(xdprelay.Config{Interfaces: ifaces})
		if err != nil {
			return err
		}
		defer off.Close()
		log.Printf("benchrelay: xdp offload on %v", off.Modes())
		events = wire(off)
	}
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:        realm,
		AuthHandler:  turn.LongTermTURNRESTAuthHandler(secret, nil),
		EventHandler: events,
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: conn,
			RelayAddressGenerator: &turn.RelayAddressGeneratorPortRange{
				RelayAddress: net.IP(rip.AsSlice()), Address: relayIP, MinPort: 40000, MaxPort: 60000, Net: nw,
			},
		}},
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Println("benchrelay: ready on", listen)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	return nil
}

// wire maps pion's events onto the offload: a channel created → Bind, deleted → Unbind,
// allocation deleted → RemoveAllocation. Allocations are named by their 5-tuple.
func wire(off *xdprelay.Offload) turn.EventHandler {
	var mu sync.Mutex
	ids := map[string]xdprelay.AllocID{}
	var next xdprelay.AllocID
	id := func(src, dst net.Addr, create bool) (xdprelay.AllocID, bool) {
		mu.Lock()
		defer mu.Unlock()
		k := src.String() + "|" + dst.String()
		v, ok := ids[k]
		if !ok && create {
			next++
			v, ok = next, true
			ids[k] = v
		}
		if !create {
			delete(ids, k)
		}
		return v, ok
	}
	ap := func(a net.Addr) netip.AddrPort {
		if u, ok := a.(*net.UDPAddr); ok {
			return u.AddrPort()
		}
		return netip.AddrPort{}
	}
	binding := func(src, dst, relay, peer net.Addr, ch uint16) xdprelay.Binding {
		a, _ := id(src, dst, true)
		return xdprelay.Binding{Alloc: a, Client: ap(src), Listen: ap(dst), Relay: ap(relay), Peer: ap(peer), Channel: ch}
	}
	return turn.EventHandler{
		OnChannelCreated: func(src, dst net.Addr, proto, _, _ string, relay, peer net.Addr, ch uint16) {
			if proto != "UDP" && proto != "udp" {
				return
			}
			if err := off.Bind(binding(src, dst, relay, peer, ch)); err != nil {
				log.Printf("benchrelay: %v (relayed in user space)", err)
			}
		},
		OnChannelDeleted: func(src, dst net.Addr, _, _, _ string, relay, peer net.Addr, ch uint16) {
			_ = off.Unbind(binding(src, dst, relay, peer, ch))
		},
		OnAllocationDeleted: func(src, dst net.Addr, _, _, _ string) {
			if a, ok := id(src, dst, false); ok {
				_, _ = off.RemoveAllocation(a)
			}
		},
	}
}
