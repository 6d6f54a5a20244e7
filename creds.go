package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"icehub/auth"
	"icehub/config"
	icesignal "icehub/signal"
)

// runCreds prints a ready {"iceServers":[...]} for one user, signed with the config's first
// secret: what operators use coturn's turnadmin for, and what a backend hands its clients.
func runCreds(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("icehub creds", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "server.toml", "config file")
	user := fs.String("user", "", "user name (the part after ':' in the TURN username)")
	ttl := fs.Duration("ttl", 0, "lifetime (default: the config's auth.ttl)")
	host := fs.String("host", "localhost", "host name for URLs derived from an unspecified listen address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "icehub: %s: %v\n", *path, err)
		return 2
	}
	if len(cfg.Auth.Secrets) == 0 {
		fmt.Fprintf(stderr, "icehub: %s: key auth.secrets: creds needs a configured secret (a generated one dies with the process)\n", *path)
		return 2
	}
	if *ttl == 0 {
		*ttl = cfg.Auth.TTL.Duration
	}
	if *ttl < time.Second {
		fmt.Fprintln(stderr, "icehub: -ttl must be at least 1s")
		return 2
	}
	ring, err := auth.NewRing(auth.Config{Secrets: cfg.Auth.Secrets})
	if err != nil {
		fmt.Fprintf(stderr, "icehub: %v\n", err)
		return 2
	}
	cred, err := ring.Mint(*user, *ttl)
	if err != nil {
		fmt.Fprintf(stderr, "icehub: -user: %v\n", err)
		return 2
	}
	out := struct {
		ICEServers []icesignal.ICEServer `json:"iceServers"`
		TTL        int64                 `json:"ttl"`
	}{icesignal.ICEServers(iceURLs(cfg), cred, *host), int64(*ttl / time.Second)}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return 1
	}
	return 0
}
