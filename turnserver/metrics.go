package turnserver

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus series. They exist (unregistered) even without a
// Registerer so the hot path never checks for nil.
type metrics struct {
	active      prometheus.Gauge
	allocations prometheus.Counter
	authFail    *prometheus.CounterVec
	peerRefused *prometheus.CounterVec
	quota       *prometheus.CounterVec
	bindings    prometheus.Counter
	unauthDrop  prometheus.Counter
	// integrityDrop counts authenticated requests dropped unchecked: their source was over
	// its MESSAGE-INTEGRITY check rate.
	integrityDrop   prometheus.Counter
	integrityChecks prometheus.Counter
	connRefused     prometheus.Counter
	connTimedOut    prometheus.Counter
	offloaded       prometheus.Counter // packets the XDP offload relayed (also in pktTo*)

	// Resolved children: WithLabelValues on every packet would hash the labels each time.
	pktToPeer, pktToClient   prometheus.Counter
	byteToPeer, byteToClient prometheus.Counter
	// capPkts and capBytes count datagrams a bitrate cap dropped, by direction and by
	// limit (capLimit - 1): bitrate.go.
	capPkts, capBytes [2][2]prometheus.Counter
	// alternate counts Allocates answered 300 Try Alternate or 508 by admission, by reason.
	alternate *prometheus.CounterVec
	stunOnly  prometheus.Counter
}

// capDropped counts pkts datagrams of n bytes dropped by cap l in direction d.
func (m *metrics) capDropped(d direction, l capLimit, pkts, n int) {
	m.capPkts[d][l-1].Add(float64(pkts))
	m.capBytes[d][l-1].Add(float64(n))
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	packets := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icehub_turn_relayed_packets_total", Help: "Packets (or TCP reads) relayed, by direction.",
	}, []string{"direction"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icehub_turn_relayed_bytes_total", Help: "Payload bytes relayed, by direction.",
	}, []string{"direction"})
	capPkts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icehub_turn_bitrate_dropped_packets_total",
		Help: "Datagrams dropped by a bitrate cap, by direction and by limit (allocation: turn.max_bitrate, total: turn.total_bitrate).",
	}, []string{"direction", "limit"})
	capBytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "icehub_turn_bitrate_dropped_bytes_total",
		Help: "Payload bytes dropped by a bitrate cap, by direction and by limit.",
	}, []string{"direction", "limit"})
	m := &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "icehub_turn_allocations_active", Help: "Live TURN allocations.",
		}),
		allocations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_turn_allocations_total", Help: "TURN allocations created.",
		}),
		authFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icehub_turn_auth_failures_total", Help: "Refused TURN credentials, by reason.",
		}, []string{"reason"}),
		peerRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icehub_turn_peer_refused_total", Help: "Peers refused by the peer filter, by range.",
		}, []string{"range"}),
		quota: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icehub_turn_quota_refused_total", Help: "Allocations refused by a quota (user or total).",
		}, []string{"kind"}),
		bindings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_turn_stun_bindings_total", Help: "STUN Binding requests received.",
		}),
		unauthDrop: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_turn_unauth_dropped_total", Help: "Unauthenticated or failed requests left unanswered: their source had no answer credit left.",
		}),
		integrityDrop: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_turn_integrity_dropped_total", Help: "Authenticated requests dropped unchecked: their source was over turn.integrity_rate.",
		}),
		integrityChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_turn_integrity_checks_total", Help: "MESSAGE-INTEGRITY checks made (HMAC work), after the source and nonce checks.",
		}),
		connRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_turn_conns_refused_total", Help: "TCP/TLS connections closed at once: their IP was at turn.max_conns_per_ip.",
		}),
		connTimedOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_turn_conns_timed_out_total", Help: "TCP/TLS connections closed for having no allocation after turn.allocate_timeout.",
		}),
		offloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icehub_turn_offloaded_packets_total",
			Help: "Packets relayed in the kernel by the XDP offload, both directions (also counted in icehub_turn_relayed_packets_total).",
		}),
		pktToPeer:    packets.WithLabelValues("to_peer"),
		pktToClient:  packets.WithLabelValues("to_client"),
		byteToPeer:   bytes.WithLabelValues("to_peer"),
		byteToClient: bytes.WithLabelValues("to_client"),
		alternate: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icehub_turn_allocate_redirected_total",
			Help: "Authenticated Allocates refused before pion: 300 Try Alternate or 508, by reason (full, draining) and answer (alternate, capacity).",
		}, []string{"reason", "answer"}),
	}
	m.stunOnly = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "icehub_turn_stun_only_refused_total", Help: "Allocate requests refused with 403 because turn.stun_only is on.",
	})
	for d, dir := range []string{"to_peer", "to_client"} {
		for l, lim := range []string{"allocation", "total"} {
			m.capPkts[d][l] = capPkts.WithLabelValues(dir, lim)
			m.capBytes[d][l] = capBytes.WithLabelValues(dir, lim)
		}
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.active, m.allocations, m.authFail, m.peerRefused, m.quota, m.bindings, m.unauthDrop,
		m.integrityDrop, m.integrityChecks, m.connRefused, m.connTimedOut, m.offloaded, packets, bytes,
		capPkts, capBytes, m.alternate, m.stunOnly,
	} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}
