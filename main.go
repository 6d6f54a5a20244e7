// Command icehub is a STUN/TURN server and a WebRTC signaling hub in one process: it relays
// media, passes offers/answers/candidates between peers in rooms, and hands every client
// time-limited TURN credentials. main only wires the packages together.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"icehub/config"
)

// version is stamped by the build (-ldflags "-X main.version=..."); "dev" otherwise.
var version = "dev"

const usage = `icehub — STUN/TURN server and WebRTC signaling hub

Usage:
  icehub [-config FILE]                 run (default config: server.toml)
  icehub -check [-config FILE]          validate the config and exit
  icehub check [-config FILE]           same
  icehub creds -user NAME [-ttl 1h] [-config FILE]
                                        print {"iceServers":[...]} for NAME, signed with the config's first secret
  icehub version | -version             print the version

Exit status: 0 ok, 1 runtime failure, 2 bad config or usage.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without os.Exit, so the command line can be tested.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Fprintln(stdout, "icehub", version)
			return 0
		case "check":
			return runCheck(args[1:], stdout, stderr)
		case "creds":
			return runCreds(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("icehub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	path := fs.String("config", "server.toml", "config file")
	check := fs.Bool("check", false, "validate the config and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "icehub: unexpected argument %q\n%s", fs.Arg(0), usage)
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "icehub", version)
		return 0
	}
	if *check {
		return checkFile(*path, stdout, stderr)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "icehub: %s: %v\n", *path, err)
		return 2
	}
	if err := serve(*path, cfg, stderr); err != nil {
		fmt.Fprintf(stderr, "icehub: %v\n", err)
		return 1
	}
	return 0
}

func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("icehub check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "server.toml", "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	return checkFile(*path, stdout, stderr)
}

func checkFile(path string, stdout, stderr io.Writer) int {
	if _, err := config.Load(path); err != nil {
		fmt.Fprintf(stderr, "icehub: %s: %v\n", path, err)
		return 2
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return 0
}
