package turnserver

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// slogFactory routes pion's logging into slog. pion logs per-packet events at info and
// debug, so those become slog Debug; its warnings and errors become Warn because a
// misbehaving client is not an error of this server.
type slogFactory struct{ l *slog.Logger }

// NewLogger implements logging.LoggerFactory.
func (f slogFactory) NewLogger(scope string) logging.LeveledLogger {
	return slogLeveled{f.l.With("component", "pion-"+scope)}
}

type slogLeveled struct{ l *slog.Logger }

func (s slogLeveled) log(level slog.Level, msg string) {
	// Enabled first so the hot path does not format strings nobody reads.
	if s.l.Enabled(context.Background(), level) {
		s.l.Log(context.Background(), level, msg)
	}
}

func (s slogLeveled) logf(level slog.Level, format string, args ...any) {
	if s.l.Enabled(context.Background(), level) {
		s.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (s slogLeveled) Trace(msg string)                  { s.log(slog.LevelDebug-4, msg) }
func (s slogLeveled) Tracef(format string, args ...any) { s.logf(slog.LevelDebug-4, format, args...) }
func (s slogLeveled) Debug(msg string)                  { s.log(slog.LevelDebug, msg) }
func (s slogLeveled) Debugf(format string, args ...any) { s.logf(slog.LevelDebug, format, args...) }
func (s slogLeveled) Info(msg string)                   { s.log(slog.LevelDebug, msg) }
func (s slogLeveled) Infof(format string, args ...any)  { s.logf(slog.LevelDebug, format, args...) }
func (s slogLeveled) Warn(msg string)                   { s.log(slog.LevelWarn, msg) }
func (s slogLeveled) Warnf(format string, args ...any)  { s.logf(slog.LevelWarn, format, args...) }
func (s slogLeveled) Error(msg string)                  { s.log(slog.LevelWarn, msg) }
func (s slogLeveled) Errorf(format string, args ...any) { s.logf(slog.LevelWarn, format, args...) }
