package statuspage

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// series is one chart line: a metric from the registry (summed over the series whose label
// matches, when label is set), shown as is (gauges) or as a per-second rate (counters)
// times scale.
type series struct {
	Key    string  `json:"key"`
	Metric string  `json:"metric"`
	Label  string  `json:"label,omitempty"` // name="value", as /metrics writes it
	Rate   bool    `json:"rate"`
	Scale  float64 `json:"-"`
	lname  string
	lvalue string
}

// charted are the page's lines, in the order the samples carry them.
var charted = []series{
	{Key: "allocations", Metric: "icehub_turn_allocations_active"},
	{Key: "to_peer_bps", Metric: "icehub_turn_relayed_bytes_total", lname: "direction", lvalue: "to_peer", Rate: true, Scale: 8},
	{Key: "to_client_bps", Metric: "icehub_turn_relayed_bytes_total", lname: "direction", lvalue: "to_client", Rate: true, Scale: 8},
	{Key: "bindings_per_s", Metric: "icehub_turn_stun_bindings_total", Rate: true, Scale: 1},
	{Key: "websockets", Metric: "icehub_signal_connections"},
	{Key: "rooms", Metric: "icehub_signal_rooms"},
}

func init() {
	for i := range charted {
		if s := &charted[i]; s.lname != "" {
			s.Label = s.lname + "=" + strconv.Quote(s.lvalue)
		}
	}
}

// history is a ring of samples: the time and, per charted series, the raw value read
// (counters stay raw; rates are computed when served).
type history struct {
	mu    sync.Mutex
	max   int
	times []int64 // unix milliseconds
	raw   [][]float64
}

func newHistory(max int) *history { return &history{max: max} }

func (h *history) add(t time.Time, vals []float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.times = append(h.times, t.UnixMilli())
	h.raw = append(h.raw, vals)
	if n := len(h.times) - h.max; n > 0 {
		h.times = append(h.times[:0], h.times[n:]...)
		h.raw = append(h.raw[:0], h.raw[n:]...)
	}
}

// sample reads the charted metrics from the registry once.
func (p *Page) sample() {
	mfs, err := p.cfg.Gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return
	}
	byName := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	vals := make([]float64, len(charted))
	for i, s := range charted {
		vals[i] = sum(byName[s.Metric], s.lname, s.lvalue)
		if s.Rate && math.IsNaN(vals[i]) {
			vals[i] = 0 // a labelled counter is gathered only once a child exists: until then it is 0
		}
	}
	p.hist.add(p.now(), vals)
}

// sum adds the counter or gauge values of mf's series whose label lname is lvalue (all of
// them when lname is empty); NaN when the metric is not registered (a part that is off).
func sum(mf *dto.MetricFamily, lname, lvalue string) float64 {
	if mf == nil {
		return math.NaN()
	}
	var total float64
next:
	for _, m := range mf.GetMetric() {
		if lname != "" {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == lname && lp.GetValue() != lvalue {
					continue next
				}
			}
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		}
	}
	return total
}

// statusJSON is /api/status: columns of samples newer than ?since (unix ms). A rate at a
// sample is over the interval up to it, so the first sample of the history has none (null).
type statusJSON struct {
	Now      int64                 `json:"now"`
	Interval float64               `json:"interval_s"`
	Series   []series              `json:"series"`
	T        []int64               `json:"t"`
	Values   map[string][]*float64 `json:"values"`
}

func (p *Page) serveStatus(w http.ResponseWriter, r *http.Request) {
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	out := statusJSON{Now: p.now().UnixMilli(), Interval: p.cfg.Interval.Seconds(), Series: charted,
		T: []int64{}, Values: make(map[string][]*float64, len(charted))}
	for _, s := range charted {
		out.Values[s.Key] = []*float64{}
	}
	p.hist.mu.Lock()
	for i, t := range p.hist.times {
		if t <= since {
			continue
		}
		out.T = append(out.T, t)
		for j, s := range charted {
			var v *float64
			cur := p.hist.raw[i][j]
			switch {
			case !s.Rate:
				v = finite(cur)
			case i > 0:
				dt := float64(t-p.hist.times[i-1]) / 1000
				if d := cur - p.hist.raw[i-1][j]; dt > 0 && d >= 0 {
					v = finite(d / dt * s.Scale)
				}
			}
			out.Values[s.Key] = append(out.Values[s.Key], v)
		}
	}
	p.hist.mu.Unlock()
	writeJSON(w, out)
}

// finite is v, or nil (JSON null) for NaN and infinities, which JSON cannot carry.
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // HTML-escapes <, > and &: safe even if sniffed as HTML
}
