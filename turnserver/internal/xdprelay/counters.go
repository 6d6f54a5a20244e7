//go:build linux

package xdprelay

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Counters are what the kernel relayed for one allocation. Bytes are application data
// (ChannelData payload), not counting headers or padding, the same measure both ways.
type Counters struct {
	ToPeerPackets, ToPeerBytes     uint64
	ToClientPackets, ToClientBytes uint64
}

// Counters returns allocation id's counters; ok is false for an allocation with no binding
// installed (never bound, or removed).
func (o *Offload) Counters(id AllocID) (c Counters, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.allocs[id]; !ok || o.closed {
		return Counters{}, false
	}
	c, err := o.countersLocked(id)
	return c, err == nil
}

func (o *Offload) countersLocked(id AllocID) (Counters, error) {
	var per []relayAllocStats
	if err := o.objs.AllocCounters.Lookup(uint32(id), &per); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Counters{}, nil
		}
		return Counters{}, fmt.Errorf("xdp counters of allocation %d: %w", id, err)
	}
	var c Counters
	for _, s := range per {
		c.ToPeerPackets += s.ToPeerPackets
		c.ToPeerBytes += s.ToPeerBytes
		c.ToClientPackets += s.ToClientPackets
		c.ToClientBytes += s.ToClientBytes
	}
	return c, nil
}

// verdictNames follow enum verdict in bpf/relay.h, in order; TestVerdictNames checks the
// count against the program's verdicts map.
var verdictNames = []string{
	"not_ip", "not_plain_udp", "no_binding", "bad_length", "no_checksum_v6",
	"no_nexthop", "frag_needed", "egress_foreign", "adjust_failed", "tx", "redirect",
}

const (
	verdictTX       = 9
	verdictRedirect = 10
)

// Verdicts returns how many packets met each fate since Open, by name: "tx" and "redirect"
// were relayed, "adjust_failed" dropped, every other one passed to the stack unchanged (the
// name says why: no_binding, not_plain_udp, no_nexthop, frag_needed, ...). For debugging
// and tests; Total is the metric.
func (o *Offload) Verdicts() (map[string]uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, errors.New("xdp verdicts: offload closed")
	}
	out := make(map[string]uint64, len(verdictNames))
	for i, name := range verdictNames {
		n, err := sumPerCPU(o.objs.Verdicts, uint32(i))
		if err != nil {
			return nil, err
		}
		out[name] = n
	}
	return out, nil
}

// Total returns the packets relayed in the kernel since Open, both directions, for
// icehub_turn_offloaded_packets_total. It only grows, also across RemoveAllocation.
func (o *Offload) Total() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0
	}
	tx, _ := sumPerCPU(o.objs.Verdicts, verdictTX)
	rd, _ := sumPerCPU(o.objs.Verdicts, verdictRedirect)
	return tx + rd
}

func sumPerCPU(m *ebpf.Map, key uint32) (uint64, error) {
	var per []uint64
	if err := m.Lookup(key, &per); err != nil {
		return 0, fmt.Errorf("xdp verdict %d: %w", key, err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}
