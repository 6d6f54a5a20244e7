package config

import (
	"crypto/tls"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// validate checks every value Parse decoded. Whatever start-up or a reload would refuse is
// refused here, so that a file `icehub -check` accepts starts (root TestCheckAndStartAgree).
func (c *Config) validate(data []byte) error {
	bad := func(key, format string, args ...any) error { return keyErr(data, key, format, args...) }
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "must be debug, info, warn or error, not %q", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return bad("log.format", "must be text or json, not %q", c.Log.Format)
	}
	if c.Server.ShutdownTimeout.Duration <= 0 {
		return bad("server.shutdown_timeout", "must be above zero")
	}
	if c.Server.GCPercent < 0 || c.Server.GCPercent > 10000 {
		return bad("server.gc_percent", "must be 0 (Go's default) or 1 to 10000, got %d", c.Server.GCPercent)
	}
	if len(c.TURN.Listen) == 0 {
		return bad("turn.listen", "needs at least one host:port")
	}
	for _, a := range c.TURN.Listen {
		if err := checkHostPort(a); err != nil {
			return bad("turn.listen", "%v", err)
		}
	}
	for _, a := range c.TURN.TLSListen {
		if err := checkHostPort(a); err != nil {
			return bad("turn.tls_listen", "%v", err)
		}
	}
	if len(c.TURN.TLSListen) > 0 && (c.TURN.TLSCert == "" || c.TURN.TLSKey == "") {
		return bad("turn.tls_listen", "needs turn.tls_cert and turn.tls_key")
	}
	if c.TURN.Realm == "" {
		return bad("turn.realm", "must not be empty")
	}
	if c.TURN.PublicIP != "" {
		if _, err := netip.ParseAddr(c.TURN.PublicIP); err != nil {
			return bad("turn.public_ip", "not an IP address: %q", c.TURN.PublicIP)
		}
	}
	if c.TURN.RelayIP != "" {
		if _, err := netip.ParseAddr(c.TURN.RelayIP); err != nil {
			return bad("turn.relay_ip", "not an IP address: %q", c.TURN.RelayIP)
		}
	}
	if c.TURN.MaxAllocationsPerUser < 0 {
		return bad("turn.max_allocations_per_user", "must be 0 (no limit) or more")
	}
	if c.TURN.MaxAllocations < 0 {
		return bad("turn.max_allocations", "must be 0 (no limit) or more")
	}
	if c.TURN.UDPSockets < 0 || c.TURN.UDPSockets > 256 {
		return bad("turn.udp_sockets", "must be 0 (one per core) to 256")
	}
	for _, k := range []struct {
		key string
		v   float64
	}{
		{"turn.max_allocations_per_ip", float64(c.TURN.MaxAllocationsPerIP)},
		{"turn.max_conns_per_ip", float64(c.TURN.MaxConnsPerIP)},
		{"turn.answer_allowance", float64(c.TURN.AnswerAllowance)},
		{"turn.answer_refill", float64(c.TURN.AnswerRefill)},
		{"turn.integrity_rate", c.TURN.IntegrityRate},
		{"turn.integrity_burst", float64(c.TURN.IntegrityBurst)},
		{"turn.allocate_timeout", float64(c.TURN.AllocateTimeout.Duration)},
	} {
		if k.v < 0 {
			return bad(k.key, "must not be negative")
		}
	}
	if c.TURN.AnswerAllowance > 0 && c.TURN.AnswerAllowance < 256 {
		return bad("turn.answer_allowance", "must be 0 (nothing answered beyond what a source sent) or at least 256 bytes, got %d", c.TURN.AnswerAllowance)
	}
	if c.TURN.IntegrityRate > 0 && c.TURN.IntegrityBurst < 1 {
		return bad("turn.integrity_burst", "must be 1 or more when turn.integrity_rate is set")
	}
	if err := c.TURN.validateOffload(data); err != nil {
		return err
	}
	if err := c.validateControls(data); err != nil {
		return err
	}
	if c.Auth.TTL.Duration <= 0 {
		return bad("auth.ttl", "must be above zero, got %s", c.Auth.TTL.Duration)
	}
	for i, s := range c.Auth.Secrets {
		if len(s) < 8 {
			return bad("auth.secrets", "secret #%d is shorter than 8 characters", i+1)
		}
	}
	if err := checkHostPort(c.Signal.Listen); err != nil {
		return bad("signal.listen", "%v", err)
	}
	if c.Signal.MaxPeersPerRoom < 1 {
		return bad("signal.max_peers_per_room", "must be 1 or more")
	}
	if c.Signal.MaxRoomsPerConn < 1 {
		return bad("signal.max_rooms_per_conn", "must be 1 or more")
	}
	if c.Signal.MaxFrameBytes < 512 {
		return bad("signal.max_frame_bytes", "must be 512 or more")
	}
	if c.Signal.SendQueue < 1 {
		return bad("signal.send_queue", "must be 1 or more")
	}
	if c.Signal.PingInterval.Duration < 100*time.Millisecond {
		return bad("signal.ping_interval", "must be 100ms or more")
	}
	if c.Signal.MaxConnsPerIP < 0 {
		return bad("signal.max_conns_per_ip", "must not be negative")
	}
	if c.Signal.MessagesPerSecond < 0 {
		return bad("signal.messages_per_second", "must not be negative")
	}
	if c.Signal.MessageBurst < 0 {
		return bad("signal.message_burst", "must not be negative")
	}
	if c.Signal.ResumeWindow.Duration < 0 || c.Signal.ResumeWindow.Duration > time.Hour {
		return bad("signal.resume_window", "must be between 0s (off) and 1h")
	}
	if c.Signal.ResumeBuffer < 1 || c.Signal.ResumeBuffer > 65536 {
		return bad("signal.resume_buffer", "must be 1 to 65536")
	}
	for _, o := range c.Signal.AllowedOrigins {
		if o != "*" && !isOrigin(o) {
			return bad("signal.allowed_origins", "%q is not \"*\" or scheme://host[:port] (http or https, no path)", o)
		}
	}
	for _, o := range c.Signal.PublicOrigins {
		if !isOrigin(o) {
			return bad("signal.public_origins", "%q is not scheme://host[:port] (http or https, no path)", o)
		}
	}
	if c.Signal.IdleTimeout.Duration < time.Second {
		return bad("signal.idle_timeout", "must be 1s or more")
	}
	if c.Signal.ReadTimeout.Duration < time.Second {
		return bad("signal.read_timeout", "must be 1s or more")
	}
	if err := c.validateProxies(bad); err != nil {
		return err
	}
	// Start-up loads the certificates; so does -check, so a file it accepts starts.
	for _, kp := range []struct{ table, cert, pkey string }{
		{"turn", c.TURN.TLSCert, c.TURN.TLSKey},
		{"signal", c.Signal.TLSCert, c.Signal.TLSKey},
	} {
		switch {
		case kp.cert == "" && kp.pkey == "":
			continue
		case kp.cert == "":
			return bad(kp.table+".tls_key", "needs %s.tls_cert too", kp.table)
		case kp.pkey == "":
			return bad(kp.table+".tls_cert", "needs %s.tls_key too", kp.table)
		}
		if _, err := tls.LoadX509KeyPair(kp.cert, kp.pkey); err != nil {
			return bad(kp.table+".tls_cert", "cannot load the certificate and key: %v", err)
		}
	}
	for _, u := range c.Signal.ICEURLs {
		if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			return bad("signal.ice_urls", "%q must start with stun:, turn: or turns:", u)
		}
	}
	if c.Admin.Listen != "" {
		if err := checkHostPort(c.Admin.Listen); err != nil {
			return bad("admin.listen", "%v", err)
		}
	}
	if u := c.Cluster.RedisURL; u != "" {
		if !strings.HasPrefix(u, "redis://") && !strings.HasPrefix(u, "rediss://") {
			return bad("cluster.redis_url", "must start with redis:// or rediss://")
		}
		// The client library's own parser: what it refuses at start-up is refused here.
		if _, err := redis.ParseURL(u); err != nil {
			return bad("cluster.redis_url", "%v", err)
		}
	}
	if c.Cluster.MemberTTL.Duration < time.Second {
		return bad("cluster.member_ttl", "must be 1s or more")
	}
	if strings.ContainsAny(c.Cluster.NodeID, "|,\n ") {
		return bad("cluster.node_id", "must not contain '|', ',', spaces or newlines")
	}
	return c.validateUsage(data)
}

// NormOrigin returns a web origin (http(s)://host[:port], nothing more) in the form browsers
// send it, lowercased; ok is false for anything else. The hub compares origins with it, so
// what validation accepts is exactly what the hub can use.
func NormOrigin(o string) (origin string, ok bool) {
	u, err := url.Parse(strings.TrimSpace(o))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), true
}

func isOrigin(o string) bool {
	_, ok := NormOrigin(o)
	return ok
}

func checkHostPort(s string) error {
	_, err := ParseHostPort(s)
	return err
}
