package signal

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	conns       prometheus.Gauge
	connsTotal  prometheus.Counter
	messages    prometheus.Counter
	droppedSlow prometheus.Counter
	errors      *prometheus.CounterVec
	parked      prometheus.Gauge
	resumes     *prometheus.CounterVec
}

// newMetrics builds the hub's collectors and registers them when reg is not nil; without a
// registry they still count, which keeps the code free of nil checks.
func newMetrics(reg prometheus.Registerer, rooms func() float64) (*metrics, error) {
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "icehub_signal_connections", Help: "Open signaling WebSocket connections.",
		}),
		connsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_signal_connections_total", Help: "Signaling WebSocket connections accepted.",
		}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_signal_messages_total", Help: "Client message frames relayed to their room.",
		}),
		droppedSlow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_signal_dropped_slow_total", Help: "Connections dropped because their send queue was full.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icehub_signal_errors_total", Help: "Error frames and protocol closes, by code.",
		}, []string{"code"}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "icehub_signal_parked_sessions", Help: "Sessions kept on this node for a resume after their connection was lost.",
		}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icehub_signal_resumes_total",
			Help: "Session resume outcomes: resumed, refused (unknown, used or expired token), expired (window passed), overflow (missed too much), not-parked (a cap was reached).",
		}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	roomsGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "icehub_signal_rooms", Help: "Rooms with at least one member on this node.",
	}, rooms)
	for _, c := range []prometheus.Collector{m.conns, m.connsTotal, m.messages, m.droppedSlow, m.errors, m.parked, m.resumes, roomsGauge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
