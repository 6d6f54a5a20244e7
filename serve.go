package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"icehub/auth"
	"icehub/config"
	"icehub/internal/statuspage"
	"icehub/internal/usagelog"
	icesignal "icehub/signal"
	"icehub/turnserver"
)

// app is one running icehub: the parts main started and what a reload must reach.
type app struct {
	path   string
	cfg    config.Config
	level  *slog.LevelVar
	log    *slog.Logger
	ring   *auth.Ring
	turn   *turnserver.Server
	hub    *icesignal.Hub
	http   *http.Server
	admin  *http.Server
	tlsMgr *certs
	port   *hubPort
	usage  *usagelog.Writer
	// generated holds the secret made up at start when the config has none, so a reload of
	// such a config keeps issued credentials valid.
	generated string
	// state is what the admin listener's /readyz and /healthz report: running, draining
	// (not ready, alive) or stopping.
	state atomic.Int32
	// drained is set once drain has closed the hub's WebSockets and listener.
	drained bool
}

// The values of app.state.
const (
	stateRunning int32 = iota
	stateDraining
	stateStopping
)

func newLogger(c config.Log, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	lv.Set(parseLevel(c.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), lv
	}
	return slog.New(slog.NewTextHandler(w, opts)), lv
}

// applyGC sets the garbage collector's target from server.gc_percent (0: Go's default, 100).
// A GOGC environment variable, which the runtime has already applied, wins over the file.
func applyGC(c config.Server, log *slog.Logger) {
	if env := os.Getenv("GOGC"); env != "" {
		if c.GCPercent != 0 {
			log.Debug("GOGC environment variable set: server.gc_percent ignored", "GOGC", env)
		}
		return
	}
	p := c.GCPercent
	if p == 0 {
		p = 100
	}
	if old := debug.SetGCPercent(p); old != p {
		log.Debug("gc percent set", "gc_percent", p, "was", old)
	}
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s)) // config validated the name
	return l
}

// secrets returns the configured secrets, or the one generated at start.
func (a *app) secrets(c config.Config) []string {
	if len(c.Auth.Secrets) > 0 {
		return c.Auth.Secrets
	}
	return []string{a.generated}
}

func serve(path string, cfg config.Config, stderr io.Writer) error {
	// Catch signals before announcing readiness: a SIGHUP sent the moment we say READY must
	// reload, not kill the process with the default action.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	log, level := newLogger(cfg.Log, stderr)
	a := &app{path: path, cfg: cfg, level: level, log: log}
	applyGC(cfg.Server, log)
	if len(cfg.Auth.Secrets) == 0 {
		a.generated = auth.GenerateSecret()
		log.Warn("no [auth] secrets configured: generated a random one for this run; credentials will not survive a restart and other nodes cannot verify them")
	}
	ring, err := auth.NewRing(auth.Config{Secrets: a.secrets(cfg)})
	if err != nil {
		return err
	}
	a.ring = ring

	reg := newRegistry()

	if a.tlsMgr, err = loadCerts(cfg); err != nil {
		return err
	}
	fr, err := bindHubPort(cfg, a.tlsMgr, log, reg)
	if err != nil {
		return err
	}
	defer fr.close()
	a.port = fr
	// The usage writer outlives the TURN server (deferred first, closed last), so the records
	// of the allocations Close ends are written.
	if a.usage, err = usagelog.New(usagelog.Config{Path: cfg.Usage.File, Logger: log, Registerer: reg}); err != nil {
		return err
	}
	defer a.usage.Close()
	tc, err := turnConfig(cfg, fr, a.tlsMgr, ring, log, reg)
	if err != nil {
		return fmt.Errorf("turn: %w", err)
	}
	tc.OnAllocationEnded = func(r turnserver.AllocationRecord) { a.usage.Write(usageRecord(r)) }
	a.turn, err = turnserver.New(tc)
	if err != nil {
		return err // "turnserver: ..." already
	}
	defer a.turn.Close()

	var rooms icesignal.Rooms
	if cfg.Cluster.RedisURL != "" {
		rr, err := icesignal.NewRedisRooms(icesignal.RedisRoomsConfig{
			URL: cfg.Cluster.RedisURL, NodeID: cfg.Cluster.NodeID, Expiry: cfg.Cluster.MemberTTL.Duration, Logger: log,
		})
		if err != nil {
			return err
		}
		defer rr.Close()
		rooms = rr
		log.Info("cluster mode: rooms shared through redis")
	}
	hs := hubSettings(cfg, a.tlsMgr)
	warnSTUNOnly(cfg, log)
	a.hub, err = icesignal.New(icesignal.Config{
		Settings: hs, Ring: ring, TTL: cfg.Auth.TTL.Duration, ICEURLs: iceURLs(cfg),
		Logger: log, Registerer: reg, Rooms: rooms,
	})
	if err != nil {
		return fmt.Errorf("signal: %w", err)
	}

	a.http = &http.Server{Handler: a.hub.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		IdleTimeout: hs.IdleTimeout, ReadTimeout: hs.ReadTimeout}
	if fr.tls != nil {
		a.http.TLSConfig = fr.tls
		go a.http.ServeTLS(fr.http, "", "") //nolint:errcheck // ends with Shutdown
	} else {
		go a.http.Serve(fr.http) //nolint:errcheck // ends with Shutdown
	}

	if cfg.Admin.Listen != "" {
		page := statuspage.New(statuspage.Config{Gatherer: reg, Allocations: a.liveAllocations})
		defer page.Close()
		if a.admin, err = startAdmin(cfg.Admin.Listen, reg, &a.state, page, log); err != nil {
			return err
		}
	}

	turnAddrs := make([]string, 0, len(a.turn.Addrs()))
	for _, ad := range a.turn.Addrs() {
		turnAddrs = append(turnAddrs, ad.Network()+"/"+ad.String())
	}
	log.Info("icehub ready", "version", version, "turn", strings.Join(turnAddrs, ","),
		"signal", fr.scheme+"://"+fr.http.Addr().String(), "config", path)
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY failed", "err", err)
	}

	for s := range sigs {
		if s == syscall.SIGHUP {
			a.reload()
			continue
		}
		log.Info("stopping", "signal", s.String())
		_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
		if d := a.cfg.Server.DrainTimeout.Duration; d > 0 {
			a.drain(d, sigs)
		}
		a.state.Store(stateStopping)
		return a.shutdown()
	}
	return nil
}

// reload re-reads the config file and applies what can change live; a broken file changes nothing.
func (a *app) reload() {
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReloading)
	defer daemon.SdNotify(false, daemon.SdNotifyReady) //nolint:errcheck
	cfg, err := config.Load(a.path)
	if err == nil {
		err = a.apply(cfg)
	}
	if err != nil {
		// logrotate's postrotate sends SIGHUP whatever the state of the file: reopen anyway
		// (before saying so, so that whoever waits for the line finds the file reopened).
		if err := a.usage.Reopen(a.cfg.Usage.File); err != nil {
			a.log.Error("usage.file not reopened", "err", err)
		}
		a.log.Error("reload refused; keeping the running config", "err", err)
		return
	}
	a.log.Info("reloaded", "config", a.path)
}

// apply is all or nothing, the way Caddy provisions a config before swapping it: first
// everything that can fail — validation, the certificates, every component's new settings —
// then the commits, none of which can fail. A refused reload changes nothing.
func (a *app) apply(cfg config.Config) error {
	if err := sameListeners(a.cfg, cfg); err != nil {
		return err
	}
	certs, err := loadCerts(cfg)
	if err != nil {
		return err
	}
	commitTURN, err := a.turn.PrepareReload(turnSettings(cfg.TURN))
	if err != nil {
		return err // "turnserver: ..." already
	}
	commitHub, err := a.hub.PrepareReload(hubSettings(cfg, certs))
	if err != nil {
		return fmt.Errorf("signal: %w", err)
	}
	secrets := a.secrets(cfg)
	if len(secrets) == 0 {
		return auth.ErrNoSecret
	}
	// Last: the only preparation that holds something (the new file), so nothing can fail
	// after it.
	commitUsage, _, err := a.usage.PrepareReopen(cfg.Usage.File)
	if err != nil {
		return err
	}
	// Nothing below can fail.
	commitTURN()
	commitHub()
	a.port.proxy.set(cfg)
	_ = a.ring.Set(secrets)
	if err := commitUsage(); err != nil { // the writer is stuck in a write: it switches after it
		a.log.Error("usage.file not reopened", "err", err)
	}
	a.tlsMgr.swap(certs)
	a.level.Set(parseLevel(cfg.Log.Level))
	applyGC(cfg.Server, a.log)
	warnSTUNOnly(cfg, a.log)
	a.cfg = cfg
	return nil
}

// sameListeners refuses a reload that would need sockets re-bound: that takes a restart.
func sameListeners(old, cur config.Config) error {
	switch {
	case strings.Join(old.TURN.Listen, ",") != strings.Join(cur.TURN.Listen, ","):
		return errors.New("turn.listen changed: restart to apply")
	case strings.Join(old.TURN.TLSListen, ",") != strings.Join(cur.TURN.TLSListen, ","):
		return errors.New("turn.tls_listen changed: restart to apply")
	case old.TURN.Realm != cur.TURN.Realm || old.TURN.PublicIP != cur.TURN.PublicIP || old.TURN.RelayIP != cur.TURN.RelayIP:
		return errors.New("turn.realm, turn.public_ip or turn.relay_ip changed: restart to apply")
	case old.TURN.RelayPorts != cur.TURN.RelayPorts || old.TURN.UDPSockets != cur.TURN.UDPSockets:
		return errors.New("turn.relay_ports or turn.udp_sockets changed: restart to apply")
	case old.TURN.Offload != cur.TURN.Offload || !slices.Equal(old.TURN.OffloadInterfaces, cur.TURN.OffloadInterfaces):
		return errors.New("turn.offload or turn.offload_interfaces changed: restart to apply")
	case (old.TURN.TLSCert == "") != (cur.TURN.TLSCert == "") || (old.Signal.TLSCert == "") != (cur.Signal.TLSCert == ""):
		return errors.New("TLS turned on or off: restart to apply")
	case old.Signal.Listen != cur.Signal.Listen:
		return errors.New("signal.listen changed: restart to apply")
	case old.Signal.IdleTimeout != cur.Signal.IdleTimeout || old.Signal.ReadTimeout != cur.Signal.ReadTimeout:
		return errors.New("signal.idle_timeout or signal.read_timeout changed: restart to apply")
	case old.Admin.Listen != cur.Admin.Listen:
		return errors.New("admin.listen changed: restart to apply")
	case old.Log.Format != cur.Log.Format:
		return errors.New("log.format changed: restart to apply")
	case old.Cluster != cur.Cluster:
		return errors.New("a [cluster] key changed: restart to apply")
	}
	return nil
}

func (a *app) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Server.ShutdownTimeout.Duration)
	defer cancel()
	var errs []error
	if !a.drained {
		// Hijacked WebSockets are not tracked by http.Server: the hub closes them itself (1001).
		errs = append(errs, a.hub.Shutdown(ctx))
		errs = append(errs, a.http.Shutdown(ctx))
	}
	if a.admin != nil {
		errs = append(errs, a.admin.Shutdown(ctx))
	}
	errs = append(errs, a.turn.Close())
	errs = append(errs, a.usage.Close()) // after the TURN server: its last records are the shutdown ones
	err := errors.Join(errs...)
	if err != nil {
		a.log.Warn("stopped with errors", "err", err)
	} else {
		a.log.Info("stopped")
	}
	return err
}
