//go:build linux

package xdprelay

// The BPF object is compiled by clang through bpf2go and committed (relay_bpfel.o,
// relay_bpfeb.o and their Go wrappers), so `go build` needs no clang. The compiler is pinned
// by name: check-generated.sh regenerates with the same one and compares the bytes.
//
//go:generate go tool bpf2go -tags linux -cc clang-14 -strip llvm-strip-14 -no-global-types -type client_key -type client_val -type peer_key -type peer_val -type alloc_stats -type nexthop_key -type nexthop_val relay bpf/relay.c -- -Ibpf/include -Wall -Werror
