package signal

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"icehub/auth"
)

// checkICEServers verifies the RTCIceServer list: STUN without, TURN with credentials
// minted for user ("": any) that the ring accepts. It returns the credentials' expiry.
func checkICEServers(t *testing.T, ring *auth.Ring, servers []ICEServer, user string) time.Time {
	t.Helper()
	if len(servers) != 2 {
		t.Fatalf("iceServers = %+v, want a STUN and a TURN entry", servers)
	}
	stun, turn := servers[0], servers[1]
	if !slices.Equal(stun.URLs, testICE[:1]) || stun.Username != "" || stun.Credential != "" {
		t.Fatalf("STUN entry = %+v", stun)
	}
	if !slices.Equal(turn.URLs, testICE[1:]) {
		t.Fatalf("TURN urls = %v", turn.URLs)
	}
	got, err := ring.Verify(turn.Username, turn.Credential)
	if err != nil {
		t.Fatalf("credentials do not verify: %v", err)
	}
	if user != "" && got != user {
		t.Fatalf("credentials for %q, want %q", got, user)
	}
	exp, _, _ := auth.Parse(turn.Username)
	return exp
}

var peerIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)

// turnUser returns the TURN user a frame's iceServers were minted for.
func turnUser(t *testing.T, ring *auth.Ring, servers []ICEServer) string {
	t.Helper()
	for _, s := range servers {
		if s.Username != "" {
			user, err := ring.Verify(s.Username, s.Credential)
			if err != nil {
				t.Fatal(err)
			}
			return user
		}
	}
	t.Fatalf("no TURN credentials in %+v", servers)
	return ""
}

func TestWelcome(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	a, b := e.connect(t), e.connect(t)
	for _, p := range []*peer{a, b} {
		if !peerIDRe.MatchString(p.id) {
			t.Fatalf("peer id %q is not 128 bits base64url", p.id)
		}
		if p.welcome.TTL != 3600 {
			t.Fatalf("ttl = %d", p.welcome.TTL)
		}
		exp := checkICEServers(t, e.ring, p.welcome.ICEServers, "")
		if d := time.Until(exp); d < 59*time.Minute || d > time.Hour {
			t.Fatalf("credentials expire in %s", d)
		}
		// The TURN identity is random too, and not the id every room member sees.
		if u := turnUser(t, e.ring, p.welcome.ICEServers); !peerIDRe.MatchString(u) || u == p.id {
			t.Fatalf("TURN user %q: want 128 random bits other than the peer id %s", u, p.id)
		}
	}
	if a.id == b.id || turnUser(t, e.ring, a.welcome.ICEServers) == turnUser(t, e.ring, b.welcome.ICEServers) {
		t.Fatal("two connections share an id or a TURN user")
	}
}

func TestICEServersPushedBeforeExpiry(t *testing.T) {
	e := newEnv(t, 2*time.Second, nil)
	p := e.connect(t)
	first := checkICEServers(t, e.ring, p.welcome.ICEServers, "")
	user := turnUser(t, e.ring, p.welcome.ICEServers) // renewals keep the session's TURN user
	prev := first
	for i := range 2 {
		f, err := p.read(3 * time.Second)
		if err != nil || f.Type != "ice-servers" {
			t.Fatalf("push %d: %+v %v", i, f, err)
		}
		if now := time.Now(); !now.Before(prev) {
			t.Fatalf("push %d came at %s, after the credentials expired at %s", i, now, prev)
		}
		exp := checkICEServers(t, e.ring, f.ICEServers, user)
		if !exp.After(prev) || f.TTL != 2 {
			t.Fatalf("push %d: expiry %s not after %s, ttl %d", i, exp, prev, f.TTL)
		}
		prev = exp
	}
	// On request, too.
	p.send(map[string]string{"type": "ice-servers"})
	f := p.expect("ice-servers")
	checkICEServers(t, e.ring, f.ICEServers, user)
}

func TestAPIICEServers(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	r, err := http.Get(e.srv.URL + "/api/ice-servers")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("status %d headers %v", r.StatusCode, r.Header)
	}
	var body struct {
		ICEServers []ICEServer `json:"iceServers"`
		TTL        int64       `json:"ttl"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.TTL != 3600 {
		t.Fatalf("ttl = %d", body.TTL)
	}
	checkICEServers(t, e.ring, body.ICEServers, "")
}

func TestAPITURN(t *testing.T) {
	e := newEnv(t, time.Hour, nil)
	cases := []struct {
		name  string
		query url.Values
		want  int
		user  string // "" = random; ending in "." = that prefix and a random suffix
	}{
		{"named user", url.Values{"service": {"turn"}, "username": {"alice"}}, 200, "alice."},
		{"longest name", url.Values{"service": {"turn"}, "username": {strings.Repeat("u", auth.MaxUserLen-23)}}, 200, strings.Repeat("u", auth.MaxUserLen-23) + "."},
		{"no username", url.Values{"service": {"turn"}}, 200, ""},
		{"no service", url.Values{"username": {"alice"}}, 400, ""},
		{"wrong service", url.Values{"service": {"stun"}, "username": {"alice"}}, 400, ""},
		{"empty username", url.Values{"service": {"turn"}, "username": {""}}, 400, ""},
		{"space in username", url.Values{"service": {"turn"}, "username": {"a b"}}, 400, ""},
		{"control char", url.Values{"service": {"turn"}, "username": {"a\x01"}}, 400, ""},
		{"too long", url.Values{"service": {"turn"}, "username": {strings.Repeat("u", auth.MaxUserLen-22)}}, 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := http.Get(e.srv.URL + "/api/turn?" + tc.query.Encode())
			if err != nil {
				t.Fatal(err)
			}
			defer r.Body.Close()
			if r.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", r.StatusCode, tc.want)
			}
			if tc.want != 200 {
				return
			}
			var body struct {
				Username string   `json:"username"`
				Password string   `json:"password"`
				TTL      int64    `json:"ttl"`
				URIs     []string `json:"uris"`
			}
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			ts, user, ok := strings.Cut(body.Username, ":")
			exp, _ := strconv.ParseInt(ts, 10, 64)
			if !ok || time.Until(time.Unix(exp, 0)) < 59*time.Minute {
				t.Fatalf("username %q", body.Username)
			}
			if prefix, ok := strings.CutSuffix(tc.user, "."); ok {
				suffix, found := strings.CutPrefix(user, prefix+".")
				if !found || !peerIDRe.MatchString(suffix) {
					t.Fatalf("user %q, want %q and 128 random bits", user, tc.user)
				}
			} else if tc.user != "" && user != tc.user {
				t.Fatalf("user %q, want %q", user, tc.user)
			}
			if got, err := e.ring.Verify(body.Username, body.Password); err != nil || got != user {
				t.Fatalf("verify: %q %v", got, err)
			}
			if body.TTL != 3600 || !slices.Equal(body.URIs, testICE[1:]) {
				t.Fatalf("ttl %d uris %v", body.TTL, body.URIs)
			}
		})
	}
}

func TestICEServersHostPlaceholder(t *testing.T) {
	cred := auth.Credentials{Username: "1:u", Password: "p"}
	cases := []struct{ host, want string }{
		{"turn.example.org:8080", "turn:turn.example.org:3478?transport=udp"},
		{"turn.example.org", "turn:turn.example.org:3478?transport=udp"},
		{"[::1]:8080", "turn:[::1]:3478?transport=udp"},
		{"", "turn:localhost:3478?transport=udp"},
	}
	for _, tc := range cases {
		got := ICEServers([]string{"stun:{host}:3478", "turn:{host}:3478?transport=udp"}, cred, tc.host)
		if len(got) != 2 || got[1].URLs[0] != tc.want || got[1].Username != "1:u" || got[0].Username != "" {
			t.Errorf("host %q: %+v, want TURN url %s", tc.host, got, tc.want)
		}
	}
}

// Issue 11: a room member who learns another's peer id, or even its TURN user, cannot mint
// credentials for that TURN user (and so cannot spend its allocation quota); a backend with an
// API key may name its users.
func TestTURNUserCannotBeTaken(t *testing.T) {
	e := newEnv(t, time.Hour, func(s *Settings) { s.APIKeys = []string{"backend-key-0123456789"} })
	key := "?key=backend-key-0123456789"
	dial := func() *peer {
		conn, _, err := e.dialRaw(t, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		p := &peer{t: t, conn: conn}
		p.welcome = p.expect("welcome")
		p.id = p.welcome.ID
		return p
	}
	victim, attacker := dial(), dial()
	victim.join("r")
	j := attacker.join("r")
	victim.expect("peer-joined")
	victimTURN := turnUser(t, e.ring, victim.welcome.ICEServers)
	victim.message("r", "", "hello")
	m := attacker.expect("message")
	seen, _ := json.Marshal([]any{j, m, attacker.welcome})
	if !strings.Contains(string(seen), victim.id) || strings.Contains(string(seen), victimTURN) {
		t.Fatal("the attacker should see the victim's peer id and never its TURN user")
	}
	mint := func(user, key string) string {
		r, err := http.Get(e.srv.URL + "/api/turn?service=turn&username=" + url.QueryEscape(user) + key)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var body struct{ Username, Password string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || r.StatusCode != 200 {
			t.Fatalf("status %d: %v", r.StatusCode, err)
		}
		got, err := e.ring.Verify(body.Username, body.Password)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// The API itself needs the key here; the key's holder is trusted to name users.
	if got := mint("backend-user-7", "&key=backend-key-0123456789"); got != "backend-user-7" {
		t.Fatalf("with an API key the user is %q, want it as given", got)
	}
	if err := e.hub.Reload(func() Settings { s := e.hub.pol.Load().sig; s.APIKeys = nil; return s }()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{victim.id, victimTURN} {
		if got := mint(name, ""); got == victimTURN || !strings.HasPrefix(got, name+".") {
			t.Fatalf("asking for %q minted TURN user %q (victim's is %q)", name, got, victimTURN)
		}
	}
}
