#!/usr/bin/env bash
# check-generated.sh: prove the committed BPF objects and their Go wrappers are what the C
# source in bpf/ compiles to. It reruns gen.go's bpf2go command into a temp dir and compares
# byte for byte. CI calls it; run it after editing bpf/ and `go generate`.
#
# Reproducibility: bpf2go already strips what varies between machines (clang's ident
# string, DWARF, absolute paths: -fdebug-prefix-map makes them relative to this directory).
# What remains is the compiler itself, so gen.go names clang-14 explicitly and this script
# refuses to compare with any other build of it than the one in bpf/TOOLCHAIN (Debian
# bookworm's): a different clang produces different, equally valid bytes, and that must
# read as "wrong compiler", not as "objects out of date". Headers come from bpf/include,
# libbpf-dev (bpf_helpers.h: macros and helper ids) and linux-libc-dev (linux/bpf.h: kernel
# ABI); their versions are recorded in TOOLCHAIN too and reported on a mismatch.
set -euo pipefail
cd "$(dirname "$0")"

want_clang=$(sed -n 's/^clang-14: //p' bpf/TOOLCHAIN)
if ! command -v clang-14 >/dev/null || ! command -v llvm-strip-14 >/dev/null; then
	echo "check-generated: needs clang-14 and llvm-strip-14 (apt-get install clang-14 llvm-14)" >&2
	exit 2
fi
have_clang=$(clang-14 --version | head -1)
if [ "$have_clang" != "$want_clang" ]; then
	echo "check-generated: objects were built with '$want_clang', this machine has '$have_clang';" >&2
	echo "  the comparison would only show compiler differences. Use the pinned compiler." >&2
	exit 2
fi
for pkg in libbpf-dev linux-libc-dev; do
	want=$(sed -n "s/^$pkg: //p" bpf/TOOLCHAIN)
	have=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || echo none)
	if [ "$have" != "$want" ]; then
		echo "check-generated: note: $pkg is $have, objects were built with $want" >&2
	fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The bpf2go arguments are gen.go's, so the two cannot drift apart.
args=$(sed -n 's|^//go:generate go tool bpf2go ||p' gen.go)
[ -n "$args" ] || { echo "check-generated: no bpf2go line in gen.go" >&2; exit 2; }
# shellcheck disable=SC2086 # word splitting of the argument list is intended
GOPACKAGE=xdprelay GOFILE=gen.go go tool bpf2go -output-dir "$tmp" $args

status=0
for f in "$tmp"/*; do
	name=$(basename "$f")
	if ! cmp -s "$f" "$name"; then
		echo "check-generated: $name differs from what bpf/ compiles to: run go generate ./turnserver/internal/xdprelay and commit" >&2
		status=1
	fi
done
for f in relay_bpf*.go relay_bpf*.o; do
	[ -e "$tmp/$f" ] || { echo "check-generated: $f is committed but no longer generated" >&2; status=1; }
done
[ $status -eq 0 ] && echo "check-generated: committed BPF objects match bpf/ ($have_clang)"
exit $status
