package main

import (
	"net"
	"net/netip"

	"icehub/config"
)

// iceURLs returns what browsers should put in iceServers: the operator's [signal] ice_urls, or
// stun:/turn:/turns: URLs derived from where TURN listens. An unspecified listen address with
// no public_ip is written as the placeholder host "{host}", which the hub replaces with the
// host name the browser used to reach it — the one name certain to resolve for that browser.
// With turn.stun_only the derived list has stun: URLs only; ice_urls are the operator's word
// and are handed out as written (turn: URLs there can only be other servers').
func iceURLs(c config.Config) []string {
	if len(c.Signal.ICEURLs) > 0 {
		return c.Signal.ICEURLs
	}
	urls := []string{} // never nil: the hub takes nil for "keep the list in force"
	seen := map[string]bool{}
	add := func(u string) {
		if !seen[u] {
			seen[u] = true
			urls = append(urls, u)
		}
	}
	for _, l := range c.TURN.Listen {
		hp := advertised(l, c.TURN.PublicIP)
		add("stun:" + hp)
		if !c.TURN.STUNOnly {
			add("turn:" + hp + "?transport=udp")
			add("turn:" + hp + "?transport=tcp")
		}
	}
	if c.TURN.STUNOnly {
		return urls
	}
	for _, l := range c.TURN.TLSListen {
		add("turns:" + advertised(l, c.TURN.PublicIP) + "?transport=tcp")
	}
	return urls
}

func advertised(listen, publicIP string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if publicIP != "" {
		host = publicIP
	} else if a, err := netip.ParseAddr(host); host == "" || err == nil && a.IsUnspecified() {
		host = "{host}"
	}
	return net.JoinHostPort(host, port)
}
