package config

import "icehub/internal/proxyaddr"

// validateProxies checks turn.proxy_from, signal.proxy_from and signal.client_ip_header.
// A list that trusts every address (a /0) is refused: anyone could then claim any client
// address, in a PROXY header or a forwarding header, and spend or dodge everyone's limits.
func (c *Config) validateProxies(bad func(key, format string, args ...any) error) error {
	for _, k := range []struct {
		key  string
		list []Prefix
	}{{"turn.proxy_from", c.TURN.ProxyFrom}, {"signal.proxy_from", c.Signal.ProxyFrom}} {
		for _, p := range k.list {
			if p.Bits() == 0 {
				return bad(k.key, "%s trusts every address to say who it is; list your load balancers' or proxies' addresses or subnets", p)
			}
		}
	}
	if _, ok := proxyaddr.CanonicalHeader(c.Signal.ClientIPHeader); !ok {
		return bad("signal.client_ip_header", "must be \"X-Forwarded-For\", \"Forwarded\" or \"\" (none), not %q", c.Signal.ClientIPHeader)
	}
	return nil
}
