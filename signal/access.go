package signal

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"icehub/internal/proxyaddr"
)

// originAllowed applies the origin rules: a request without Origin is not from a browser
// page and passes (the origin check protects users' browsers, API keys protect the server);
// the hub's own pages pass; then AllowedOrigins, or when it is empty, pages on localhost.
func (p *policy) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || p.anyOrigin {
		return true
	}
	n, ok := normOrigin(origin)
	if !ok {
		return false
	}
	if p.ownOrigin(n, r) {
		return true
	}
	if len(p.origins) > 0 {
		return p.origins[n]
	}
	u, _ := url.Parse(n)
	switch u.Hostname() {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}

// ownOrigin reports whether the normalized origin n is one of the hub's own. The request's
// Host header is not evidence: under DNS rebinding an attacker's name resolves to the hub,
// and the attacker's page then sends its own name as both Origin and Host. So an origin is
// the hub's own when it is listed in PublicOrigins, when its host is one of the hub's names
// (Hostnames, the hosts of its ICE URLs), or when it is the very IP address and port the
// request arrived on (an address cannot be rebound).
func (p *policy) ownOrigin(n string, r *http.Request) bool {
	if p.own[n] {
		return true
	}
	u, err := url.Parse(n)
	if err != nil {
		return false
	}
	host := canonHost(u.Hostname())
	if p.ownHosts[host] {
		return true
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	lhost, lport, err := net.SplitHostPort(local.String())
	if err != nil {
		return false
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if port != lport {
		return false
	}
	if net.ParseIP(host) != nil {
		return host == canonHost(lhost)
	}
	// "localhost" only ever names this machine; it is ours when the request came in on loopback.
	lip := net.ParseIP(lhost)
	return (host == "localhost" || strings.HasSuffix(host, ".localhost")) && lip != nil && lip.IsLoopback()
}

// keyAllowed checks Authorization: Bearer K or ?key=K when API keys are configured.
func (p *policy) keyAllowed(r *http.Request) bool {
	return len(p.keys) == 0 || p.keyPresented(r)
}

// keyPresented reports whether the request carries one of the configured API keys.
func (p *policy) keyPresented(r *http.Request) bool {
	if len(p.keys) == 0 {
		return false
	}
	got := r.URL.Query().Get("key")
	if a := r.Header.Get("Authorization"); a != "" {
		if scheme, tok, ok := strings.Cut(a, " "); ok && strings.EqualFold(scheme, "Bearer") {
			got = strings.TrimSpace(tok)
		}
	}
	if got == "" {
		return false
	}
	ok := 0
	for _, k := range p.keys {
		ok |= subtle.ConstantTimeCompare(k, []byte(got))
	}
	return ok == 1
}

// clientIP is the address the per-IP limits and the logs know a request by: its
// connection's peer (the client a PROXY header named, when the listener read one), or, when
// that peer is in ProxyFrom, the client its ClientIPHeader names (proxyaddr.Client).
func (p *policy) clientIP(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			return r.RemoteAddr
		}
		return host
	}
	return proxyaddr.Client(ap.Addr(), r.Header, p.ipHeader, p.proxyFrom).String()
}

// api wraps an /api handler with CORS, preflight, API key and per-IP rate checks.
func (h *Hub) api(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pol := h.pol.Load()
		w.Header().Add("Vary", "Origin")
		if !pol.originAllowed(r) {
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			w.Header().Set("Access-Control-Allow-Origin", o)
		}
		switch r.Method {
		case http.MethodOptions:
			// Preflights carry no credentials, so they are answered before the key check.
			w.Header().Set("Access-Control-Allow-Methods", "GET, OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", "Authorization")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		case http.MethodGet, http.MethodHead:
		default:
			w.Header().Set("Allow", "GET, OPTIONS")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if !pol.keyAllowed(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="icehub"`)
			http.Error(w, "missing or wrong API key", http.StatusUnauthorized)
			return
		}
		if ip, err := netip.ParseAddr(pol.clientIP(r)); err == nil && !h.apiLimits.Allow(ip.Unmap(), time.Now()) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many requests", http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		next(w, r)
	})
}
