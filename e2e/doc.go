// Package e2e holds end-to-end tests that run the icehub binary in a network-namespace lab
// (icehub/internal/netlab) behind real NATs, against coturn's turnutils_* tools and headless
// Chromium. They need root, iproute2, nftables, coturn and chromium, and skip with one line
// saying what to install where something is missing (or fail, under ICEHUB_TEST_REQUIRE_ALL=1).
//
// deploy/natlab/run.sh runs them with readable output; the README's "Deploying behind NAT"
// section shows what they prove.
package e2e
