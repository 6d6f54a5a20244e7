package proxyaddr

import (
	"net/http"
	"net/netip"
	"strings"
)

// The request headers a trusted HTTP proxy may name its client in (Client's header).
const (
	XForwardedFor = "X-Forwarded-For"
	Forwarded     = "Forwarded" // RFC 7239
)

// CanonicalHeader returns XForwardedFor, Forwarded or "" for name in any case, and false
// for any other name.
func CanonicalHeader(name string) (string, bool) {
	switch {
	case name == "":
		return "", true
	case strings.EqualFold(name, XForwardedFor):
		return XForwardedFor, true
	case strings.EqualFold(name, Forwarded):
		return Forwarded, true
	}
	return "", false
}

// Client returns the address of the client that sent an HTTP request which arrived from
// peer (the socket's peer, or the client a PROXY header named) with headers h.
//
// Only a peer in trusted is believed, and only about the header named header
// (XForwardedFor or Forwarded; "" believes none): every proxy appends the address it got
// the request from, so the list is read from its right end, and each trusted address in
// turn vouches for the one before it; the first untrusted one is the client. Whatever a
// client wrote itself sits left of that and is never read. An entry that is not an address
// ("unknown", an obfuscated name, garbage) stops the walk at the proxy that wrote it.
//
// Which header the proxies maintain must be said, not guessed: a proxy that appends one
// passes the other through as the client sent it, so believing whichever is present would
// let a client pick its own address.
func Client(peer netip.Addr, h http.Header, header string, trusted []netip.Prefix) netip.Addr {
	client := peer.Unmap()
	if header == "" || !Contains(trusted, client) {
		return client
	}
	var hops []string
	switch header {
	case XForwardedFor:
		for _, line := range h.Values(XForwardedFor) {
			hops = append(hops, strings.Split(line, ",")...)
		}
	case Forwarded:
		for _, line := range h.Values(Forwarded) {
			hops = append(hops, forwardedFor(line)...)
		}
	default:
		return client
	}
	for i := len(hops) - 1; i >= 0; i-- {
		ip, ok := parseHop(hops[i])
		if !ok {
			return client
		}
		client = ip
		if !Contains(trusted, ip) {
			return client
		}
	}
	return client
}

// parseHop parses one address as proxies write them: "192.0.2.1", "192.0.2.1:4711",
// "2001:db8::1", "[2001:db8::1]" or "[2001:db8::1]:4711", spaces and (Forwarded) quotes
// around it.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip.WithZone("").Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().WithZone("").Unmap(), true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if ip, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return ip.WithZone("").Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// forwardedFor returns the for= value of each element of one Forwarded header line, in
// order, "" for an element without one (RFC 7239 section 4: elements separated by commas,
// pairs by semicolons, values tokens or quoted strings, which may hold either separator).
func forwardedFor(line string) []string {
	var out []string
	var key, val strings.Builder
	inKey, quoted, escaped, hasFor := true, false, false, false
	var forVal string
	endPair := func() {
		if strings.EqualFold(strings.TrimSpace(key.String()), "for") {
			forVal, hasFor = val.String(), true
		}
		key.Reset()
		val.Reset()
		inKey = true
	}
	endElem := func() {
		endPair()
		if hasFor {
			out = append(out, forVal)
		} else {
			out = append(out, "")
		}
		forVal, hasFor = "", false
	}
	for _, r := range line {
		switch {
		case escaped:
			val.WriteRune(r)
			escaped = false
		case quoted && r == '\\':
			escaped = true
		case r == '"' && !inKey:
			quoted = !quoted
		case quoted:
			val.WriteRune(r)
		case r == ',':
			endElem()
		case r == ';':
			endPair()
		case r == '=' && inKey:
			inKey = false
		case inKey:
			key.WriteRune(r)
		default:
			val.WriteRune(r)
		}
	}
	endElem()
	return out
}
