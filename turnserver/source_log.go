package turnserver

import (
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"icehub/internal/ratelimit"
)

// sourceLog bounds the log lines one source address can cause (failed authentication is
// the one an unauthenticated client can repeat at will): a burst of sourceLogBurst lines,
// then one per sourceLogEvery, and a summary of what was held back at most once a minute.
type sourceLog struct {
	log        *slog.Logger
	lim        *ratelimit.PerAddr
	suppressed atomic.Int64
	lastReport atomic.Int64 // unix seconds
}

const (
	sourceLogBurst = 5
	sourceLogEvery = 10 * time.Second
)

func newSourceLog(log *slog.Logger) *sourceLog {
	return &sourceLog{log: log, lim: ratelimit.New(float64(time.Second)/float64(sourceLogEvery), sourceLogBurst)}
}

// allow reports whether a line about ip may be logged now.
func (l *sourceLog) allow(ip netip.Addr, now time.Time) bool {
	if l.lim.Allow(ip, now) {
		return true
	}
	l.suppressed.Add(1)
	last := l.lastReport.Load()
	if now.Unix()-last >= 60 && l.lastReport.CompareAndSwap(last, now.Unix()) {
		l.log.Info("turn log lines held back: sources over their log limit",
			"lines", l.suppressed.Swap(0), "limit_per_source", "5, then 1 per 10s")
	}
	return false
}
