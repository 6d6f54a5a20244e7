package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"icehub/internal/statuspage"
)

// newRegistry holds every metric icehub exports: Go and process collectors, build info, and
// whatever turnserver and signal register.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "icehub_build_info", Help: "Always 1; the version label says which build runs.",
	}, []string{"version"})
	buildInfo.WithLabelValues(version).Set(1)
	reg.MustRegister(buildInfo)
	return reg
}

// startAdmin serves /metrics, /healthz, /readyz, pprof and the status page (at /, when page
// is set) on the admin listener, which should stay on loopback or a private interface.
// /readyz answers 503 from SIGTERM on (draining: send nothing new here), /healthz only once
// the process really stops (a draining node is alive, and a liveness probe must not kill it).
func startAdmin(listen string, reg *prometheus.Registry, state *atomic.Int32, page *statuspage.Page, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("admin.listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	check := func(down int32) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			switch st := state.Load(); {
			case st == stateStopping && st >= down:
				http.Error(w, "stopping", http.StatusServiceUnavailable)
			case st == stateDraining && st >= down:
				http.Error(w, "draining", http.StatusServiceUnavailable)
			default:
				io.WriteString(w, "ok\n")
			}
		}
	}
	mux.HandleFunc("GET /healthz", check(stateStopping))
	mux.HandleFunc("GET /readyz", check(stateDraining))
	// Profiles for `go tool pprof http://ADMIN/debug/pprof/profile` under load.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	if page != nil {
		page.Register(mux)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown
	log.Info("admin listening", "addr", ln.Addr().String())
	return srv, nil
}
