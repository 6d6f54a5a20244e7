package config

import "time"

// validateControls checks the operators' controls of issue 15: the drain, the bitrate caps
// and the alternate servers (turn.stun_only is a bool and needs nothing).
func (c *Config) validateControls(data []byte) error {
	bad := func(key, format string, args ...any) error { return keyErr(data, key, format, args...) }
	if d := c.Server.DrainTimeout.Duration; d < 0 || d > 24*time.Hour {
		return bad("server.drain_timeout", "must be between 0s (no drain) and 24h, got %s", d)
	}
	for _, k := range []struct {
		key string
		v   Bitrate
	}{{"turn.max_bitrate", c.TURN.MaxBitrate}, {"turn.total_bitrate", c.TURN.TotalBitrate}} {
		if k.v != 0 && (k.v < MinBitrate || k.v > MaxBitrate) {
			return bad(k.key, "must be empty (no cap) or between %s and %s bit/s, got %s", MinBitrate, MaxBitrate, k.v)
		}
	}
	for _, a := range c.TURN.AlternateServers {
		if _, err := ParseAlternate(a); err != nil {
			return bad("turn.alternate_servers", "%v", err)
		}
	}
	return nil
}
