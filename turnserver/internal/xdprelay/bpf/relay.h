/* Types shared by relay.c and the Go side (bpf2go generates Go structs from them).
 *
 * Addresses are 16 bytes for both families so one map serves IPv4 and IPv6: an IPv4
 * address sits in the first 4 bytes, the rest zero, and the key's family field keeps an
 * IPv4 entry from ever matching an IPv6 packet. Ports and the channel number are stored in
 * network byte order, as they appear on the wire, so the program compares and copies them
 * without swapping.
 */
#ifndef XDPRELAY_RELAY_H
#define XDPRELAY_RELAY_H

#include <linux/types.h>

#define FAMILY_V4 4
#define FAMILY_V6 6

/* Client side of a channel: what a ChannelData packet from the client carries. */
struct client_key {
	__u8 client_ip[16];
	__u8 server_ip[16]; /* the listen address the client sends to */
	__be16 client_port;
	__be16 server_port;
	__be16 channel;
	__u8 family;
	__u8 pad;
};

struct client_val {
	__u8 relay_ip[16];
	__u8 peer_ip[16];
	__be16 relay_port;
	__be16 peer_port;
	__u32 alloc;
};

/* Peer side of a channel: a datagram from the peer to the allocation's relay address. */
struct peer_key {
	__u8 peer_ip[16];
	__u8 relay_ip[16];
	__be16 peer_port;
	__be16 relay_port;
	__u8 family;
	__u8 pad[3];
};

struct peer_val {
	__u8 client_ip[16];
	__u8 server_ip[16];
	__be16 client_port;
	__be16 server_port;
	__be16 channel;
	__u16 pad;
	__u32 alloc;
};

/* Where a relayed datagram goes next: user space resolves the route and the neighbour for
 * each (source, destination) pair its bindings use and keeps these entries current. The
 * kernel's bpf_fib_lookup would do this per packet, but it refuses to answer unless IP
 * forwarding is on for the ingress interface (IPv6: for the whole host), and turning a
 * TURN server into a router is not a price the offload may ask. */
struct nexthop_key {
	__u8 src_ip[16];
	__u8 dst_ip[16];
	__u8 family;
	__u8 pad[3];
};

struct nexthop_val {
	__u32 ifindex;
	__u16 mtu;
	__u8 smac[6];
	__u8 dmac[6];
	__u16 pad;
};

/* Per-allocation counters; bytes are application payload bytes (ChannelData data). */
struct alloc_stats {
	__u64 to_peer_packets;
	__u64 to_peer_bytes;
	__u64 to_client_packets;
	__u64 to_client_bytes;
};

/* Why a packet went where it went; one per-CPU counter each. Everything but TX and
 * REDIRECT is an XDP_PASS (the stack and user space handle the packet unchanged), except
 * ADJUST_FAILED, which cannot happen for a packet that passed the checks before it. */
enum verdict {
	VERDICT_NOT_IP,          /* not IPv4/IPv6 on plain Ethernet: ARP, VLAN tags, ... */
	VERDICT_NOT_PLAIN_UDP,   /* IP options, fragments, extension headers, not UDP, truncated */
	VERDICT_NO_BINDING,      /* UDP, but no installed channel matches (STUN, indications, ...) */
	VERDICT_BAD_LENGTH,      /* ChannelData length field and datagram size disagree */
	VERDICT_NO_CHECKSUM_V6,  /* IPv6 UDP with checksum 0 is invalid; the stack decides */
	VERDICT_NO_NEXTHOP,      /* route or neighbour not known yet: the stack resolves it */
	VERDICT_FRAG_NEEDED,     /* the result would exceed the egress MTU */
	VERDICT_EGRESS_FOREIGN,  /* egress interface is not one the offload is attached to */
	VERDICT_ADJUST_FAILED,   /* bpf_xdp_adjust_head/tail failed: dropped */
	VERDICT_TX,              /* relayed back out of the ingress interface */
	VERDICT_REDIRECT,        /* relayed out of another attached interface */
	VERDICT_MAX,
};

#endif
