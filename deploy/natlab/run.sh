#!/usr/bin/env bash
# The NAT lab, for operators: builds a small Internet out of Linux network namespaces (a cloud
# VM behind a 1:1 NAT with and without hairpin, home routers with cone and symmetric NATs, a
# firewall that passes only TCP 443), runs icehub in it and checks what an operator would:
# STUN through each NAT, relays over UDP/TCP/TLS-on-443, client to client through public relay
# addresses, turn.public_ip set and unset, two browsers calling each other across the NATs,
# and a browser call through TURN that survives icehub being restarted. Everything uses
# documentation addresses inside namespaces named ihnat-*; nothing touches the host's
# interfaces, and the namespaces are removed on exit, failure included.
#
# It runs the Go tests in e2e/ (the same ones CI runs) and prints their findings as a table.
#
# Usage (as root, from anywhere in the repository):
#   deploy/natlab/run.sh                 # every case, ~5 minutes
#   deploy/natlab/run.sh relays c2c      # some: binding relays publicip c2c browsers restart
#   ICEHUB_E2E_BIN=/usr/local/bin/icehub deploy/natlab/run.sh   # test that binary, not this tree
# Needs: go, iproute2, nftables, coturn (for turnutils_*), chromium.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/local/go/bin"

if [ "$(id -u)" != 0 ]; then
  echo "the lab makes network namespaces: run it as root" >&2
  exit 1
fi
missing=()
for tool in go ip nft turnutils_uclient turnutils_peer turnutils_stunclient turnutils_natdiscovery turnserver; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]} (apt-get install iproute2 nftables coturn chromium; Go from go.dev)" >&2
  exit 1
fi

declare -A tests=([binding]=TestNATBinding [relays]=TestNATRelays [publicip]=TestNATPublicIP
  [c2c]=TestNATClientToClient [browsers]=TestNATBrowsers [restart]=TestNATHubRestart)
sel=()
for c in "${@:-binding relays publicip c2c browsers restart}"; do
  for w in $c; do
    [ -n "${tests[$w]:-}" ] || { echo "unknown case $w: one of ${!tests[*]}" >&2; exit 2; }
    sel+=("${tests[$w]}")
  done
done
filter="^($(IFS='|'; echo "${sel[*]}"))\$"

log=$(mktemp /tmp/icehub-natlab.XXXXXX.log)
echo "icehub NAT lab: running ${sel[*]} (full log: $log)"
start=$SECONDS
set +e
# ICEHUB_TEST_REQUIRE_ALL=1: a missing prerequisite fails instead of skipping silently.
ICEHUB_TEST_REQUIRE_ALL=1 go test -count=1 -v -timeout 30m -run "$filter" ./e2e/ >"$log" 2>&1
rc=$?
set -e

# The findings: every test logs one line per topology, "case N | ... | ...".
echo
findings=$(grep -E '^\s+[a-z0-9_]+_test\.go:[0-9]+: (case [0-9]|public_ip) \|' "$log" | sed -E 's/^\s+[a-z0-9_]+_test\.go:[0-9]+: //' || true)
for section in 'case 1' 'case 2' 'public_ip' 'case 3' 'case 4' 'case 5'; do
  grep -F "$section |" <<<"$findings" || true
done
echo
# The verdicts, and why the failures failed.
grep -E '^\s*--- (PASS|FAIL|SKIP)' "$log" | sed -E 's/^\s+/  /'
if [ $rc != 0 ]; then
  echo
  echo "failures:"
  grep -E '^\s+[a-z0-9_]+_test\.go:[0-9]+: ' "$log" | grep -vE ': (case [0-9]|public_ip) \|' | grep -vE 'icehub in|turnserver in|connection states' | sed -E 's/^\s+/  /' | cut -c1-400 | head -40
fi
echo
echo "$(( SECONDS - start ))s; exit $rc; full log: $log"
exit $rc
