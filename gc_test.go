package main

import (
	"io"
	"log/slog"
	"runtime/debug"
	"testing"

	"icehub/config"
)

// gcPercent reads the collector's current target without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestApplyGC(t *testing.T) {
	defer debug.SetGCPercent(gcPercent())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	t.Setenv("GOGC", "")
	applyGC(config.Server{GCPercent: 200}, log)
	if got := gcPercent(); got != 200 {
		t.Fatalf("gc_percent 200: collector at %d", got)
	}
	applyGC(config.Server{GCPercent: 0}, log) // a reload back to Go's default
	if got := gcPercent(); got != 100 {
		t.Fatalf("gc_percent 0: collector at %d, want 100", got)
	}

	// An explicit GOGC wins: the runtime applied it at start; the file must not override it.
	t.Setenv("GOGC", "150")
	debug.SetGCPercent(150)
	applyGC(config.Server{GCPercent: 200}, log)
	if got := gcPercent(); got != 150 {
		t.Fatalf("GOGC=150 set: collector at %d", got)
	}
}
