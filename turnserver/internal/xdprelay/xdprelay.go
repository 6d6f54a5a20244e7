//go:build linux

// Package xdprelay relays TURN ChannelData over UDP inside the kernel: an XDP program on
// the server's interfaces rewrites a client's ChannelData into the datagram the relay
// socket would send to the peer, and a peer's datagram into the ChannelData the listen
// socket would send to the client, without either socket seeing the packet.
//
// User space stays the authority. The program only knows the channel bindings the TURN
// server installs with Bind after it has accepted them (authentication, quotas, peer
// filter, permission), and forgets each one when the server calls Unbind or
// RemoveAllocation. Anything the program does not fully understand (IP options, fragments,
// VLAN tags, IPv6 extension headers, non-UDP, STUN messages, Send/Data indications, unknown
// tuples, no route or unresolved neighbour) goes up the stack unchanged, so the socket path
// is the fallback for every packet, not only when the offload is off.
//
// The package knows nothing of TURN servers or pion: the caller maps its allocation and
// channel events onto Bind, Unbind and RemoveAllocation.
package xdprelay

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Mode is how the program is attached to an interface.
type Mode string

const (
	// ModeAuto attaches in driver (native) mode and falls back to generic (skb) mode on
	// interfaces whose driver has no XDP support. Generic mode works everywhere but saves
	// less: the kernel has already built an skb.
	ModeAuto Mode = ""
	// ModeNative refuses interfaces without driver support.
	ModeNative Mode = "native"
	// ModeGeneric always uses generic mode (for testing).
	ModeGeneric Mode = "generic"
)

// Config says where to attach and how large the kernel's tables are.
type Config struct {
	// Interfaces to attach to, by name: every interface that carries the listen and relay
	// addresses (DefaultInterfaces finds them). Packets are only ever sent out of these.
	Interfaces []string
	// MaxBindings bounds the channel bindings held in the kernel (each costs two map
	// entries of about 90 bytes). Bind fails past it; the caller relays that channel in
	// user space. 0 means 65536.
	MaxBindings int
	// MaxAllocations bounds the allocations with counters (one per-CPU entry of 32 bytes
	// per CPU each). 0 means 65536.
	MaxAllocations int
	// Mode is the attach mode; the zero value is ModeAuto.
	Mode Mode
	// NeighbourRefresh is how often the next hops (neighbour MACs, interface MTUs) are
	// re-read from the kernel; routes every tenth time. 0 means one second. Until a
	// change is seen, relayed packets go to the old MAC; a removed entry sends them up
	// the stack.
	NeighbourRefresh time.Duration
}

// Offload is the loaded program, its maps and its attachments. Methods are safe for
// concurrent use.
type Offload struct {
	mu       sync.Mutex
	objs     relayObjects
	links    []link.Link
	modes    map[string]Mode
	byClient map[clientIndex]Binding
	byPeer   map[peerIndex]clientIndex
	allocs   map[AllocID]map[clientIndex]struct{}
	closed   bool

	nl         *rtnl
	ifaces     map[int]linkInfo // attached interfaces by index
	hops       map[hopKey]*hop
	stop, done chan struct{}
	refreshing bool // the refresher runs (set once Open succeeded)
}

// ErrNotSupported is wrapped by Open's error when this kernel cannot run the program.
var ErrNotSupported = errors.New("kernel lacks the eBPF/XDP features the offload needs")

// ErrPermission is wrapped by Open's error when the process may not load BPF programs or
// attach them to interfaces. CAP_PERFMON is needed because the program subtracts packet
// pointers (the frame length), which the verifier allows only to perfmon-capable loaders.
var ErrPermission = errors.New("needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root)")

// Open loads the program and attaches it to cfg.Interfaces in the calling thread's network
// namespace. The error says why when it cannot (permissions, kernel, interface); the caller
// logs it and relays in user space. Close detaches; so does the process exiting, because
// the attachments are BPF links owned by this process.
func Open(cfg Config) (*Offload, error) {
	if len(cfg.Interfaces) == 0 {
		return nil, errors.New("xdp offload: no interfaces to attach to")
	}
	switch cfg.Mode {
	case ModeAuto, ModeNative, ModeGeneric:
	default:
		return nil, fmt.Errorf("xdp offload: unknown mode %q", cfg.Mode)
	}
	ifaces := make([]*net.Interface, 0, len(cfg.Interfaces))
	for _, name := range cfg.Interfaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("xdp offload: interface %q: %w", name, err)
		}
		ifaces = append(ifaces, ifi)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones ignore it.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("xdp offload: raise RLIMIT_MEMLOCK: %w", classify(err))
	}
	spec, err := loadRelay()
	if err != nil {
		return nil, fmt.Errorf("xdp offload: %w", err)
	}
	bindings := uint32(orDefault(cfg.MaxBindings, 65536))
	spec.Maps[relayMapClientBindings].MaxEntries = bindings
	spec.Maps[relayMapPeerBindings].MaxEntries = bindings
	spec.Maps[relayMapAllocCounters].MaxEntries = uint32(orDefault(cfg.MaxAllocations, 65536))
	if n := len(ifaces); n > int(spec.Maps[relayMapEgress].MaxEntries) {
		return nil, fmt.Errorf("xdp offload: %d interfaces, at most %d", n, spec.Maps[relayMapEgress].MaxEntries)
	}
	o := &Offload{
		modes:    map[string]Mode{},
		byClient: map[clientIndex]Binding{},
		byPeer:   map[peerIndex]clientIndex{},
		allocs:   map[AllocID]map[clientIndex]struct{}{},
		ifaces:   map[int]linkInfo{},
		hops:     map[hopKey]*hop{},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	nl, err := openRtnl()
	if err != nil {
		return nil, fmt.Errorf("xdp offload: %w", err)
	}
	links, err := nl.links()
	if err != nil {
		nl.close()
		return nil, fmt.Errorf("xdp offload: %w", err)
	}
	for _, ifi := range ifaces {
		o.ifaces[ifi.Index] = links[ifi.Index]
	}
	o.nl = nl
	if err := spec.LoadAndAssign(&o.objs, nil); err != nil {
		nl.close()
		return nil, fmt.Errorf("xdp offload: load program: %w", classify(err))
	}
	for _, ifi := range ifaces {
		if err := o.objs.Egress.Put(uint32(ifi.Index), uint32(ifi.Index)); err != nil {
			o.Close()
			return nil, fmt.Errorf("xdp offload: interface %s: allow as egress: %w", ifi.Name, classify(err))
		}
		l, mode, err := attach(o.objs.XdpTurnRelay, ifi, cfg.Mode)
		if err != nil {
			o.Close()
			return nil, fmt.Errorf("xdp offload: interface %s: %w", ifi.Name, err)
		}
		o.links = append(o.links, l)
		o.modes[ifi.Name] = mode
	}
	o.refreshing = true
	go o.refreshLoop(cmp.Or(cfg.NeighbourRefresh, time.Second))
	return o, nil
}

func attach(prog *ebpf.Program, ifi *net.Interface, mode Mode) (link.Link, Mode, error) {
	try := func(flags link.XDPAttachFlags) (link.Link, error) {
		return link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: flags})
	}
	if mode == ModeGeneric {
		l, err := try(link.XDPGenericMode)
		return l, ModeGeneric, attachErr(err)
	}
	l, err := try(link.XDPDriverMode)
	if err == nil || mode == ModeNative {
		return l, ModeNative, attachErr(err)
	}
	if l, err2 := try(link.XDPGenericMode); err2 == nil {
		return l, ModeGeneric, nil
	}
	return nil, "", attachErr(err)
}

func attachErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrExist) || errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("attach XDP: another XDP program is attached to it: %w", err)
	}
	return fmt.Errorf("attach XDP: %w", classify(err))
}

// classify adds the sentence an operator needs to the errors that have a known cause.
func classify(err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve) && strings.Contains(strings.Join(ve.Log, "\n"), "pointer -= pointer prohibited"):
		// What the verifier refuses without CAP_PERFMON (bpf_allow_ptr_leaks): a missing
		// capability, not an old kernel.
		return fmt.Errorf("%w: the verifier refuses packet pointer arithmetic without CAP_PERFMON: %w", ErrPermission, err)
	case errors.As(err, &ve): // before EPERM/EACCES: the verifier reports through them too
		// The verifier's last lines say what it rejected; a kernel too old for a helper
		// or instruction is the usual reason on a machine the tests did not run on.
		lines := ve.Log
		if len(lines) > 3 {
			lines = lines[len(lines)-3:]
		}
		return fmt.Errorf("%w: verifier: %s", ErrNotSupported, strings.Join(lines, "; "))
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: %w", ErrPermission, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	return err
}

func orDefault(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

// Modes reports the attach mode chosen per interface.
func (o *Offload) Modes() map[string]Mode {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]Mode, len(o.modes))
	for k, v := range o.modes {
		out[k] = v
	}
	return out
}

// Close detaches the program and frees its maps; packets take the socket path again at
// once. Safe to call twice.
func (o *Offload) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	o.mu.Unlock()
	select {
	case <-o.stop:
	default:
		close(o.stop)
	}
	if o.refreshing {
		<-o.done
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var errs []error
	for _, l := range o.links {
		errs = append(errs, l.Close())
	}
	errs = append(errs, o.objs.Close())
	o.nl.close()
	clear(o.byClient)
	clear(o.byPeer)
	clear(o.allocs)
	clear(o.hops)
	return errors.Join(errs...)
}
