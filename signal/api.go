package signal

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"icehub/auth"
)

// iceServers mints credentials for user and returns the RTCIceServer list for a client that
// reached the hub under host.
func (h *Hub) iceServers(user, host string) ([]ICEServer, auth.Credentials, error) {
	cred, err := h.ring.Mint(user, h.ttl)
	if err != nil {
		return nil, cred, err
	}
	return ICEServers(h.pol.Load().ice, cred, host), cred, nil
}

// HostPlaceholder in an ICE URL stands for the host name the client used to reach the hub,
// which is what works for it when TURN listens on every address and no public IP is set.
const HostPlaceholder = "{host}"

// ICEServers builds the RTCIceServer list: one entry for the STUN URLs, which take no
// credentials, and one for the TURN URLs with cred. HostPlaceholder is replaced by host.
func ICEServers(urls []string, cred auth.Credentials, host string) []ICEServer {
	var stun, turn []string
	for _, u := range urls {
		u = strings.ReplaceAll(u, HostPlaceholder, hostOnly(host))
		if strings.HasPrefix(u, "stun:") || strings.HasPrefix(u, "stuns:") {
			stun = append(stun, u)
		} else {
			turn = append(turn, u)
		}
	}
	servers := make([]ICEServer, 0, 2)
	if len(stun) > 0 {
		servers = append(servers, ICEServer{URLs: stun})
	}
	if len(turn) > 0 {
		servers = append(servers, ICEServer{URLs: turn, Username: cred.Username, Credential: cred.Password})
	}
	return servers
}

// hostOnly strips the port from a Host header, keeping IPv6 brackets as URLs need them.
func hostOnly(hostport string) string {
	if hostport == "" {
		return "localhost"
	}
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		hostport = h
	}
	if strings.Contains(hostport, ":") && !strings.HasPrefix(hostport, "[") {
		return "[" + hostport + "]"
	}
	return hostport
}

// ttlSeconds is the TTL clients are told; whole seconds, at least one.
func (h *Hub) ttlSeconds() int64 {
	return max(int64(h.ttl/time.Second), 1)
}

func (h *Hub) turnURIs() []string {
	uris := []string{}
	for _, u := range h.pol.Load().ice {
		if strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:") {
			uris = append(uris, u)
		}
	}
	return uris
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// serveICEServers answers GET /api/ice-servers with a config ready for new RTCPeerConnection.
// Each call gets its own random user so per-user TURN quotas do not lump callers together.
func (h *Hub) serveICEServers(w http.ResponseWriter, r *http.Request) {
	servers, _, err := h.iceServers(newPeerID(), r.Host)
	if err != nil {
		h.log.Error("minting credentials", "err", err)
		http.Error(w, "cannot mint credentials", http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		ICEServers []ICEServer `json:"iceServers"`
		TTL        int64       `json:"ttl"`
	}{servers, h.ttlSeconds()})
}

// userSuffixLen is what serveTURN appends to a user name asked for without an API key: "."
// and a random peer id.
const userSuffixLen = 1 + 22

// serveTURN answers the TURN REST API draft's GET ?service=turn&username=U. username is
// optional in the draft; without it the caller gets a random one. TURN quotas are per user,
// and anyone may call this API when no api_keys are set, so a name asked for is only a prefix:
// the TURN user is U + "." + a random suffix the caller does not choose, and cannot collide
// with another caller's. A request with a valid API key (a backend that vouches for its
// users) gets U as given.
func (h *Hub) serveTURN(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("service") != "turn" {
		http.Error(w, `service must be "turn"`, http.StatusBadRequest)
		return
	}
	uris := h.turnURIs()
	if len(uris) == 0 {
		// STUN only (turn.stun_only, or ice_urls without turn: URLs): credentials would open
		// nothing, and a client told "no TURN here" falls back at once.
		http.Error(w, "no TURN service here: this hub hands out STUN URLs only (see /api/ice-servers)", http.StatusNotFound)
		return
	}
	user := newPeerID()
	if _, ok := q["username"]; ok {
		user = q.Get("username")
		if !h.pol.Load().keyPresented(r) {
			if len(user) > auth.MaxUserLen-userSuffixLen {
				http.Error(w, fmt.Sprintf("bad username: longer than %d bytes (a random suffix is added)", auth.MaxUserLen-userSuffixLen), http.StatusBadRequest)
				return
			}
			if user != "" {
				user += "." + newPeerID()
			}
		}
	}
	cred, err := h.ring.Mint(user, h.ttl)
	if errors.Is(err, auth.ErrBadUser) {
		http.Error(w, "bad username: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err != nil {
		h.log.Error("minting credentials", "err", err)
		http.Error(w, "cannot mint credentials", http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Username string   `json:"username"`
		Password string   `json:"password"`
		TTL      int64    `json:"ttl"`
		URIs     []string `json:"uris"`
	}{cred.Username, cred.Password, h.ttlSeconds(), uris})
}
