// Package config holds icehub's TOML schema, its defaults and its validation.
// Every error names the offending key and, where the file gives it, the line.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// ErrInvalid is wrapped by every error Load and Parse return for a bad file.
var ErrInvalid = errors.New("invalid config")

// Config is the whole server.toml.
type Config struct {
	Server  Server  `toml:"server"`
	Log     Log     `toml:"log"`
	TURN    TURN    `toml:"turn"`
	Auth    Auth    `toml:"auth"`
	Signal  Signal  `toml:"signal"`
	Admin   Admin   `toml:"admin"`
	Cluster Cluster `toml:"cluster"`
	Usage   Usage   `toml:"usage"`
}

// Server holds process-wide settings.
type Server struct {
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// DrainTimeout is how long SIGTERM lets live allocations relay on, while new ones are
	// sent elsewhere, before the process stops; 0: stop at once.
	DrainTimeout Duration `toml:"drain_timeout"`
	// GCPercent is the Go garbage collector's target (runtime/debug.SetGCPercent): the heap
	// may grow this many percent over the live data before a collection. 0 leaves it to Go
	// (the GOGC environment variable, else 100). A GOGC environment variable always wins.
	GCPercent int `toml:"gc_percent"`
}

// Log selects the log level and format.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// TURN configures the STUN/TURN listeners, relays, peer filter and quotas.
type TURN struct {
	Listen                Addrs     `toml:"listen"`
	Realm                 string    `toml:"realm"`
	PublicIP              string    `toml:"public_ip"`
	RelayIP               string    `toml:"relay_ip"`
	RelayPorts            PortRange `toml:"relay_ports"`
	AllowPeers            []Prefix  `toml:"allow_peers"`
	DenyPeers             []Prefix  `toml:"deny_peers"`
	MaxAllocationsPerUser int       `toml:"max_allocations_per_user"`
	MaxAllocations        int       `toml:"max_allocations"`
	TCPRelay              bool      `toml:"tcp_relay"`
	UDPSockets            int       `toml:"udp_sockets"`
	TLSListen             Addrs     `toml:"tls_listen"`
	TLSCert               string    `toml:"tls_cert"`
	TLSKey                string    `toml:"tls_key"`
	MaxAllocationsPerIP   int       `toml:"max_allocations_per_ip"`
	MaxConnsPerIP         int       `toml:"max_conns_per_ip"`
	AllocateTimeout       Duration  `toml:"allocate_timeout"`
	AnswerAllowance       int       `toml:"answer_allowance"`
	AnswerRefill          int       `toml:"answer_refill"`
	IntegrityRate         float64   `toml:"integrity_rate"`
	IntegrityBurst        int       `toml:"integrity_burst"`
	// Offload relays ChannelData of UDP clients in the kernel: "off" or "xdp".
	Offload string `toml:"offload"`
	// OffloadInterfaces are the interfaces the XDP program attaches to; empty: the ones
	// that carry the listen and relay addresses.
	OffloadInterfaces []string `toml:"offload_interfaces"`
	// ProxyFrom are the load balancers whose TCP/TLS connections start with a PROXY header.
	ProxyFrom []Prefix `toml:"proxy_from"`
	// MaxBitrate caps each allocation, each direction; TotalBitrate the whole server, each
	// direction. 0: no cap.
	MaxBitrate   Bitrate `toml:"max_bitrate"`
	TotalBitrate Bitrate `toml:"total_bitrate"`
	// STUNOnly answers Binding and refuses Allocate; the hub then lists only stun: URLs.
	STUNOnly bool `toml:"stun_only"`
	// AlternateServers ("ip:port") are named in 300 Try Alternate answers to Allocate when
	// max_allocations is reached or the server is draining.
	AlternateServers []string `toml:"alternate_servers"`
}

// Auth configures the TURN REST credential secrets.
type Auth struct {
	Secrets []string `toml:"secrets"`
	TTL     Duration `toml:"ttl"`
}

// Signal configures the WebSocket hub and its HTTP API.
type Signal struct {
	Listen            string   `toml:"listen"`
	ICEURLs           []string `toml:"ice_urls"`
	MaxPeersPerRoom   int      `toml:"max_peers_per_room"`
	MaxRoomsPerConn   int      `toml:"max_rooms_per_conn"`
	MaxFrameBytes     int      `toml:"max_frame_bytes"`
	SendQueue         int      `toml:"send_queue"`
	PingInterval      Duration `toml:"ping_interval"`
	AllowedOrigins    []string `toml:"allowed_origins"`
	PublicOrigins     []string `toml:"public_origins"`
	APIKeys           []string `toml:"api_keys"`
	MaxConnsPerIP     int      `toml:"max_conns_per_ip"`
	MessagesPerSecond float64  `toml:"messages_per_second"`
	MessageBurst      int      `toml:"message_burst"`
	TLSCert           string   `toml:"tls_cert"`
	TLSKey            string   `toml:"tls_key"`
	// ResumeWindow is how long a session outlives a lost connection for /ws?resume=TOKEN;
	// 0 turns session resume off.
	ResumeWindow Duration `toml:"resume_window"`
	// ResumeBuffer is how many frames a parked session may miss and still be resumed.
	ResumeBuffer int `toml:"resume_buffer"`
	// IdleTimeout closes keep-alive HTTP connections idle that long; ReadTimeout bounds
	// reading a whole HTTP request, body included (hijacked WebSockets are not affected).
	IdleTimeout Duration `toml:"idle_timeout"`
	ReadTimeout Duration `toml:"read_timeout"`
	// ProxyFrom are the proxies trusted to say who the client is: a PROXY header before
	// the connection's first byte, or ClientIPHeader in HTTP requests.
	ProxyFrom      []Prefix `toml:"proxy_from"`
	ClientIPHeader string   `toml:"client_ip_header"`
}

// Admin configures the metrics and health listener.
type Admin struct {
	Listen string `toml:"listen"`
}

// Cluster configures multi-node operation.
type Cluster struct {
	RedisURL string `toml:"redis_url"`
	// MemberTTL is how long a dead node's peers stay in their rooms.
	MemberTTL Duration `toml:"member_ttl"`
	// NodeID names this node in Redis; empty: random at start.
	NodeID string `toml:"node_id"`
}

// Default returns the configuration icehub runs with when a key is absent.
func Default() Config {
	return Config{
		Server: Server{ShutdownTimeout: Duration{10 * time.Second}, GCPercent: 200},
		Log:    Log{Level: "info", Format: "text"},
		TURN: TURN{
			Listen:                Addrs{"0.0.0.0:3478"},
			AllowPeers:            []Prefix{},
			DenyPeers:             []Prefix{},
			TLSListen:             Addrs{},
			Realm:                 "icehub",
			RelayPorts:            PortRange{49152, 65535},
			MaxAllocationsPerUser: 10,
			MaxAllocations:        10000,
			TCPRelay:              true,
			MaxAllocationsPerIP:   512,
			MaxConnsPerIP:         256,
			AllocateTimeout:       Duration{60 * time.Second},
			AnswerAllowance:       8192,
			AnswerRefill:          512,
			IntegrityRate:         1000,
			IntegrityBurst:        2000,
			Offload:               "off",
			OffloadInterfaces:     []string{},
			ProxyFrom:             []Prefix{},
			AlternateServers:      []string{},
		},
		Auth: Auth{Secrets: []string{}, TTL: Duration{12 * time.Hour}},
		Signal: Signal{
			Listen:            "0.0.0.0:8080",
			ICEURLs:           []string{},
			AllowedOrigins:    []string{},
			PublicOrigins:     []string{},
			APIKeys:           []string{},
			MaxPeersPerRoom:   2,
			MaxRoomsPerConn:   8,
			MaxFrameBytes:     64 << 10,
			SendQueue:         256,
			PingInterval:      Duration{20 * time.Second},
			MaxConnsPerIP:     64,
			MessagesPerSecond: 50,
			MessageBurst:      100,
			ResumeWindow:      Duration{30 * time.Second},
			ResumeBuffer:      256,
			IdleTimeout:       Duration{60 * time.Second},
			ReadTimeout:       Duration{10 * time.Second},
			ProxyFrom:         []Prefix{},
			ClientIPHeader:    "X-Forwarded-For",
		},
		Admin:   Admin{Listen: "127.0.0.1:9641"},
		Cluster: Cluster{MemberTTL: Duration{15 * time.Second}},
	}
}

// Load reads and validates a TOML file on top of Default.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return Parse(data)
}

// Parse decodes and validates TOML text on top of Default.
func Parse(data []byte) (Config, error) {
	cfg := Default()
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			if pe.LastKey != "" {
				return Config{}, fmt.Errorf("%w: line %d: key %s: %s", ErrInvalid, pe.Position.Line, pe.LastKey, pe.Message)
			}
			return Config{}, fmt.Errorf("%w: line %d: %s", ErrInvalid, pe.Position.Line, pe.Message)
		}
		if m := typeErrRE.FindStringSubmatch(err.Error()); m != nil {
			return Config{}, fmt.Errorf("%w: line %s: key %s: %s", ErrInvalid, m[1], m[2], m[3])
		}
		return Config{}, fmt.Errorf("%w: %s", ErrInvalid, strings.TrimPrefix(err.Error(), "toml: "))
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0].String()
		if hint, ok := replacedKeys[k]; ok {
			return Config{}, keyErr(data, k, "no longer exists: %s", hint)
		}
		return Config{}, keyErr(data, k, "unknown key")
	}
	if err := cfg.validate(data); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// replacedKeys are keys of earlier versions, with what took their place.
var replacedKeys = map[string]string{
	"turn.unauth_rate":  "unauthenticated answers are bounded by bytes now: see turn.answer_allowance and turn.answer_refill, and turn.integrity_rate for HMAC work",
	"turn.unauth_burst": "unauthenticated answers are bounded by bytes now: see turn.answer_allowance and turn.answer_refill, and turn.integrity_burst for HMAC work",
}

// typeErrRE picks apart BurntSushi/toml's type-mismatch errors, which are not ParseErrors.
var typeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// keyErr builds an error naming key and, when it can be found in data, its line.
func keyErr(data []byte, key, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if line := findLine(data, key); line > 0 {
		return fmt.Errorf("%w: line %d: key %s: %s", ErrInvalid, line, key, msg)
	}
	return fmt.Errorf("%w: key %s: %s", ErrInvalid, key, msg)
}

// findLine returns the 1-based line where a dotted key such as "turn.listen" is assigned,
// or 0. It understands [table] headers and "table.key =" dotted assignments, which is what
// server.toml-style files use.
func findLine(data []byte, key string) int {
	table := ""
	for i, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if strings.HasPrefix(line, "[") && !strings.HasPrefix(line, "[[") {
			table = strings.Trim(strings.TrimSpace(strings.SplitN(line, "#", 2)[0]), "[] ")
			if table == key {
				return i + 1
			}
			continue
		}
		name, _, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		full := strings.TrimSpace(name)
		if table != "" {
			full = table + "." + full
		}
		if full == key {
			return i + 1
		}
	}
	return 0
}
