//go:build linux

package turnserver

import (
	"time"

	"icehub/turnserver/internal/xdprelay"
)

// The offload's counters: what the kernel relayed reaches the allocation records (their
// deletion log line) and the relayed-traffic metrics, every offloadSyncEvery and at each
// allocation's deletion, without counting a packet twice.

// accountLocked adds c minus what was already accounted to rec and the metrics.
func (o *offloader) accountLocked(rec *relayRecord, a *offAlloc, c xdprelay.Counters) {
	d := xdprelay.Counters{
		ToPeerPackets: sub(c.ToPeerPackets, a.seen.ToPeerPackets), ToPeerBytes: sub(c.ToPeerBytes, a.seen.ToPeerBytes),
		ToClientPackets: sub(c.ToClientPackets, a.seen.ToClientPackets), ToClientBytes: sub(c.ToClientBytes, a.seen.ToClientBytes),
	}
	a.seen = c
	m := o.s.m
	if d.ToPeerPackets > 0 {
		rec.pktsToPeer.Add(d.ToPeerPackets)
		rec.bytesToPeer.Add(d.ToPeerBytes)
		m.pktToPeer.Add(float64(d.ToPeerPackets))
		m.byteToPeer.Add(float64(d.ToPeerBytes))
	}
	if d.ToClientPackets > 0 {
		rec.pktsToClient.Add(d.ToClientPackets)
		rec.bytesToClient.Add(d.ToClientBytes)
		m.pktToClient.Add(float64(d.ToClientPackets))
		m.byteToClient.Add(float64(d.ToClientBytes))
	}
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

func (o *offloader) syncLoop(every time.Duration) {
	defer close(o.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-t.C:
			o.sync()
		}
	}
}

// sync adds the kernel's counters since the last pass to the records and metrics. The
// kernel is read without o.mu held (one lookup per allocation); an allocation deleted in
// between has been accounted by allocationDeleted and is skipped.
func (o *offloader) sync() {
	o.mu.Lock()
	type item struct {
		rec *relayRecord
		a   *offAlloc
	}
	items := make([]item, 0, len(o.allocs))
	for rec, a := range o.allocs {
		items = append(items, item{rec, a})
	}
	o.mu.Unlock()
	read := make([]xdprelay.Counters, len(items))
	got := make([]bool, len(items))
	for i, it := range items {
		read[i], got[i] = o.off.Counters(it.a.id)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	for i, it := range items {
		if got[i] && o.allocs[it.rec] == it.a {
			o.accountLocked(it.rec, it.a, read[i])
		}
	}
	if t := o.off.Total(); t > o.total {
		o.s.m.offloaded.Add(float64(t - o.total))
		o.total = t
	}
}
