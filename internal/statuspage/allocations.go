package statuspage

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Table bounds: rows shown by default and at most (?n=).
const (
	defaultRows = 20
	maxRows     = 100
)

// minRefresh is how long a computed table is served again before the allocations are
// listed anew: listing walks every allocation, so polling faster buys nothing but CPU.
const minRefresh = time.Second

// busiest computes the allocation table. A row's bitrate is over the time since the
// previous listing (about one poll period), or over its life for a new allocation.
type busiest struct {
	list func() []Allocation

	mu   sync.Mutex
	at   time.Time
	prev map[allocKey][2]uint64 // bytes to peer, to client at the previous listing
	rows []row                  // every allocation, busiest first
}

type allocKey struct {
	relay, transport string
	start            int64
}

// row is one allocation in /api/allocations.
type row struct {
	User           string  `json:"user"`
	Client         string  `json:"client"`
	Transport      string  `json:"transport"`
	Relay          string  `json:"relay"`
	RelayTransport string  `json:"relay_transport"`
	AgeS           float64 `json:"age_s"`
	ToPeerBPS      float64 `json:"to_peer_bps"`
	ToClientBPS    float64 `json:"to_client_bps"`
	BytesToPeer    uint64  `json:"bytes_to_peer"`
	BytesToClient  uint64  `json:"bytes_to_client"`
}

// table returns every live allocation, busiest first, recomputing at most every minRefresh.
func (b *busiest) table(now time.Time) []row {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.list == nil {
		return []row{}
	}
	if b.rows != nil && now.Sub(b.at) < minRefresh {
		return b.rows
	}
	allocs := b.list()
	cur := make(map[allocKey][2]uint64, len(allocs))
	rows := make([]row, 0, len(allocs))
	for _, a := range allocs {
		k := allocKey{a.Relay, a.RelayTransport, a.Start.UnixNano()}
		cur[k] = [2]uint64{a.BytesToPeer, a.BytesToClient}
		age := now.Sub(a.Start)
		since, base := age, [2]uint64{}
		if old, ok := b.prev[k]; ok {
			since, base = now.Sub(b.at), old
		}
		r := row{User: a.User, Client: a.Client, Transport: a.Transport, Relay: a.Relay,
			RelayTransport: a.RelayTransport, AgeS: age.Seconds(),
			BytesToPeer: a.BytesToPeer, BytesToClient: a.BytesToClient}
		if s := since.Seconds(); s > 0 {
			r.ToPeerBPS = float64(a.BytesToPeer-min(base[0], a.BytesToPeer)) * 8 / s
			r.ToClientBPS = float64(a.BytesToClient-min(base[1], a.BytesToClient)) * 8 / s
		}
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(x, y row) int {
		if c := cmp.Compare(y.ToPeerBPS+y.ToClientBPS, x.ToPeerBPS+x.ToClientBPS); c != 0 {
			return c
		}
		return cmp.Compare(y.BytesToPeer+y.BytesToClient, x.BytesToPeer+x.BytesToClient)
	})
	b.at, b.prev, b.rows = now, cur, rows
	return rows
}

// allocationsJSON is /api/allocations.
type allocationsJSON struct {
	Now         int64 `json:"now"`
	Total       int   `json:"total"`
	Allocations []row `json:"allocations"`
}

func (p *Page) serveAllocations(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n <= 0 {
		n = defaultRows
	}
	rows := p.tops.table(p.now())
	writeJSON(w, allocationsJSON{Now: p.now().UnixMilli(), Total: len(rows), Allocations: rows[:min(n, maxRows, len(rows))]})
}
