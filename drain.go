package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"icehub/config"
)

// drainPoll is how often drain looks at the allocation count; drainStatus how often it tells
// systemd (STATUS=) how many are left.
const (
	drainPoll   = 100 * time.Millisecond
	drainStatus = 5 * time.Second
)

// drain runs between SIGTERM and shutdown when server.drain_timeout is set: /readyz turns
// 503, TURN refuses new allocations (300 Try Alternate or 508) while live ones relay on, and
// every WebSocket is closed with 1012 "service restart" at once, so clients reconnect to
// another node; the hub's listener closes with them. It returns when the last allocation has
// ended, timeout has passed, or a second SIGTERM or SIGINT asks to stop now. Draining is
// only ever started by a signal to the process: nothing on the network can start it.
func (a *app) drain(timeout time.Duration, sigs <-chan os.Signal) {
	a.state.Store(stateDraining)
	start := time.Now()
	// systemd ≥ 236 extends its stop timeout (TimeoutStopSec) by this much from now.
	extend := timeout + a.cfg.Server.ShutdownTimeout.Duration + 5*time.Second
	_, _ = daemon.SdNotify(false, fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", extend.Microseconds()))
	a.turn.Drain()
	a.log.Info("draining", "timeout", timeout, "allocations", a.turn.AllocationCount())

	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Server.ShutdownTimeout.Duration)
	if err := errors.Join(a.hub.Restart(ctx), a.http.Shutdown(ctx)); err != nil {
		a.log.Warn("closing the hub while draining", "err", err)
	}
	cancel()
	a.drained = true

	deadline := time.NewTimer(timeout - time.Since(start))
	defer deadline.Stop()
	poll := time.NewTicker(drainPoll)
	defer poll.Stop()
	var told time.Time
	for {
		n := a.turn.AllocationCount()
		if n == 0 {
			a.log.Info("drained: no allocation left", "after", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(told) >= drainStatus {
			told = time.Now()
			left := max(timeout-time.Since(start), 0).Round(time.Second)
			_, _ = daemon.SdNotify(false, fmt.Sprintf("STATUS=draining: %d allocations, stopping in %s at most", n, left))
		}
		select {
		case <-deadline.C:
			a.log.Info("drain timeout: closing the allocations left", "allocations", n, "after", timeout)
			return
		case s := <-sigs:
			if s == syscall.SIGHUP {
				a.reload()
				continue
			}
			a.log.Info("drain cut short", "signal", s.String(), "allocations", n)
			return
		case <-poll.C:
		}
	}
}

// warnSTUNOnly says when turn.stun_only meets signal.ice_urls with TURN URLs: the hub hands
// those out as written, which is right only when they are other servers'.
func warnSTUNOnly(cfg config.Config, log *slog.Logger) {
	if !cfg.TURN.STUNOnly {
		return
	}
	for _, u := range cfg.Signal.ICEURLs {
		if strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:") {
			log.Warn("turn.stun_only is on but signal.ice_urls lists TURN URLs: the hub hands them out as written; they must be other servers'", "url", u)
			return
		}
	}
}
