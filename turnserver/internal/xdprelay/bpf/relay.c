// XDP fast path for TURN ChannelData over UDP (RFC 8656 §12).
//
// User space is the authority: it installs one entry per direction for every channel binding
// it has accepted (client_bindings, peer_bindings) and removes them when the binding, its
// permission or its allocation ends. This program only relays packets that match an entry
// exactly and are plain Ethernet + IPv4 (no options, no fragment) or IPv6 (no extension
// header) + UDP. Everything else — and every case it cannot finish (next hop not resolved
// yet, MTU, egress interface not ours) — is XDP_PASS, unchanged, so the socket path
// behaves exactly as without the offload.
//
// Checksums are updated incrementally (RFC 1624): the relayed datagram's UDP checksum is the
// received one plus the difference of what changed. That costs a few dozen additions instead
// of a pass over the payload, and a corrupt datagram stays corrupt: the receiver drops it,
// as it would have dropped the original; the offload never launders a bad checksum.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "relay.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDP 17
#define AF_INET 2
#define AF_INET6 10
#define UDP_HLEN 8
#define CD_HLEN 4 /* ChannelData header: channel number, length */
#define RELAY_TTL 64
// Largest UDP payload handled. XDP frames here are single buffers no larger than a page,
// and the verifier only tracks packet pointers whose variable offset stays below 64 KiB,
// so the bound also keeps it able to prove the padding accesses safe.
#define MAX_PLEN 0x3fff /* what a socket on this host sends with: the relay is an endpoint */

struct eth {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct ip4 {
	__u8 vihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 proto;
	__u16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct ip6 {
	__be32 vtcfl;
	__be16 plen;
	__u8 nexthdr;
	__u8 hop;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct udp {
	__be16 sport;
	__be16 dport;
	__be16 len;
	__u16 check;
};

// Sizes are overwritten from Go (Config.MaxBindings, MaxAllocations) before loading.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct client_key);
	__type(value, struct client_val);
} client_bindings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct peer_key);
	__type(value, struct peer_val);
} peer_bindings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct alloc_stats);
} alloc_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VERDICT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct nexthop_key);
	__type(value, struct nexthop_val);
} nexthops SEC(".maps");

// The interfaces the offload is attached to: the only ones it may redirect to.
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} egress SEC(".maps");

// What the parser keeps of a received datagram.
struct pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u16 ucheck;  // UDP checksum as received (raw)
	__u16 plen;    // UDP payload bytes
	__u16 trailer; // frame bytes after the IP packet (Ethernet minimum-size padding)
	__u8 family;
	__u8 tos;        // IPv4 TOS, kept (DSCP and ECN pass through the relay)
	__be16 ip_id;    // IPv4: kept
	__be16 frag_off; // IPv4: only DF can be set here, kept
	__be32 v6flow;   // IPv6 version, traffic class and flow label, kept
};

static __always_inline int count(__u32 v)
{
	__u64 *c = bpf_map_lookup_elem(&verdicts, &v);
	if (c)
		(*c)++;
	return v;
}

static __always_inline int pass(__u32 v)
{
	count(v);
	return XDP_PASS;
}

// One's complement helpers over 16-bit words as they lie in memory: the sum is byte-order
// independent (RFC 1071), so no swapping is needed as long as reads and the final store
// use the same order. The accumulator is 64 bits wide so nothing overflows before fold().
static __always_inline __u64 add16(__u64 s, __u16 w) { return s + w; }
static __always_inline __u64 sub16(__u64 s, __u16 w) { return s + (__u16)~w; }

static __always_inline __u16 fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

// parse returns a verdict for packets to pass, or -1 with p filled for plain UDP.
static __always_inline int parse(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct eth *eth = data;
	struct udp *udp;
	__u32 frame, iplen;

	if ((void *)(eth + 1) > end)
		return VERDICT_NOT_IP;
	frame = end - data;
	if (eth->proto == bpf_htons(ETH_P_IP)) {
		struct ip4 *ip = (void *)(eth + 1);
		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > end)
			return VERDICT_NOT_PLAIN_UDP;
		// IHL 5 only: options are rare and not worth parsing here.
		if (ip->vihl != 0x45 || ip->proto != IPPROTO_UDP)
			return VERDICT_NOT_PLAIN_UDP;
		if (ip->frag_off & bpf_htons(0x3fff)) // MF or an offset: a fragment
			return VERDICT_NOT_PLAIN_UDP;
		iplen = bpf_ntohs(ip->tot_len);
		if (iplen < sizeof(*ip) + UDP_HLEN || ETH_HLEN + iplen > frame ||
		    bpf_ntohs(udp->len) != iplen - sizeof(*ip))
			return VERDICT_NOT_PLAIN_UDP;
		p->family = FAMILY_V4;
		__builtin_memcpy(p->saddr, ip->saddr, 4);
		__builtin_memcpy(p->daddr, ip->daddr, 4);
		p->tos = ip->tos;
		p->ip_id = ip->id;
		p->frag_off = ip->frag_off;
	} else if (eth->proto == bpf_htons(ETH_P_IPV6)) {
		struct ip6 *ip = (void *)(eth + 1);
		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > end)
			return VERDICT_NOT_PLAIN_UDP;
		// A next header other than UDP may be an extension header: not ours.
		if ((ip->vtcfl & bpf_htonl(0xf0000000)) != bpf_htonl(0x60000000) ||
		    ip->nexthdr != IPPROTO_UDP)
			return VERDICT_NOT_PLAIN_UDP;
		iplen = sizeof(*ip) + bpf_ntohs(ip->plen);
		if (bpf_ntohs(ip->plen) < UDP_HLEN || ETH_HLEN + iplen > frame ||
		    udp->len != ip->plen)
			return VERDICT_NOT_PLAIN_UDP;
		if (udp->check == 0)
			return VERDICT_NO_CHECKSUM_V6;
		p->family = FAMILY_V6;
		__builtin_memcpy(p->saddr, ip->saddr, 16);
		__builtin_memcpy(p->daddr, ip->daddr, 16);
		p->v6flow = ip->vtcfl;
	} else {
		return VERDICT_NOT_IP; // ARP, 802.1Q/802.1ad tags, anything else
	}
	p->sport = udp->sport;
	p->dport = udp->dport;
	p->ucheck = udp->check;
	p->plen = bpf_ntohs(udp->len) - UDP_HLEN;
	if (p->plen > MAX_PLEN)
		return VERDICT_NOT_PLAIN_UDP;
	p->trailer = frame - ETH_HLEN - iplen;
	return -1;
}

// route finds the next hop user space resolved for (src, dst) and checks the MTU and that
// the egress interface is one of ours. Returns -1 when the packet can be sent.
static __always_inline int route(struct xdp_md *ctx, struct nexthop_val **nh, const struct pkt *p,
				 const __u8 *src, const __u8 *dst, __u16 l3total)
{
	struct nexthop_key k = {.family = p->family};

	__builtin_memcpy(k.src_ip, src, 16);
	__builtin_memcpy(k.dst_ip, dst, 16);
	*nh = bpf_map_lookup_elem(&nexthops, &k);
	if (!*nh)
		return VERDICT_NO_NEXTHOP;
	if (l3total > (*nh)->mtu)
		return VERDICT_FRAG_NEEDED;
	if ((*nh)->ifindex != ctx->ingress_ifindex && !bpf_map_lookup_elem(&egress, &(*nh)->ifindex))
		return VERDICT_EGRESS_FOREIGN;
	return -1;
}

// write_headers lays Ethernet, IP and UDP headers for a datagram of ulen UDP bytes at the
// start of the (already resized) packet. sum is the checksum difference accumulated so
// far; the UDP length change is added here.
static __always_inline int write_headers(struct xdp_md *ctx, const struct pkt *p, const struct nexthop_val *nh,
					 const __u8 *src, const __u8 *dst, __be16 sport, __be16 dport,
					 __u16 ulen, __u64 sum, const int l3)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct eth *eth = data;
	struct udp *udp = data + ETH_HLEN + l3;
	__be16 old_ulen = bpf_htons(p->plen + UDP_HLEN), new_ulen = bpf_htons(ulen);
	__u16 check = 0;

	if ((void *)(udp + 1) > end)
		return -1;
	__builtin_memcpy(eth->dst, nh->dmac, 6);
	__builtin_memcpy(eth->src, nh->smac, 6);
	if (l3 == sizeof(struct ip4)) {
		struct ip4 *ip = (void *)(eth + 1);
		struct ip4 h = {
			.vihl = 0x45, .tos = p->tos, .tot_len = bpf_htons(sizeof(h) + ulen),
			.id = p->ip_id, .frag_off = p->frag_off, .ttl = RELAY_TTL, .proto = IPPROTO_UDP,
		};
		__builtin_memcpy(h.saddr, src, 4);
		__builtin_memcpy(h.daddr, dst, 4);
		h.check = ~fold((__u32)bpf_csum_diff(0, 0, (__be32 *)&h, sizeof(h), 0));
		eth->proto = bpf_htons(ETH_P_IP);
		__builtin_memcpy(ip, &h, sizeof(h));
	} else {
		struct ip6 *ip = (void *)(eth + 1);
		eth->proto = bpf_htons(ETH_P_IPV6);
		ip->vtcfl = p->v6flow;
		ip->plen = new_ulen;
		ip->nexthdr = IPPROTO_UDP;
		ip->hop = RELAY_TTL;
		__builtin_memcpy(ip->saddr, src, 16);
		__builtin_memcpy(ip->daddr, dst, 16);
	}
	// The UDP length counts twice: in the pseudo-header and in the UDP header.
	sum = sub16(sub16(sum, old_ulen), old_ulen);
	sum = add16(add16(sum, new_ulen), new_ulen);
	if (p->ucheck != 0) { // IPv4 checksum 0 means "none": keep none
		check = ~fold(add16(sum, (__u16)~p->ucheck));
		if (check == 0)
			check = 0xffff;
	}
	udp->sport = sport;
	udp->dport = dport;
	udp->len = new_ulen;
	udp->check = check;
	return 0;
}

// tuple_sum accounts for the 5-tuple change: old addresses and ports out, new ones in.
// Addresses are summed over all 16 bytes for both families: an IPv4 address's 12 unused
// bytes are zero in the packet copy and in the map values. Both address pairs are 32
// contiguous bytes (source and destination; the order does not matter to a sum), which
// bpf_csum_diff takes in one call.
static __always_inline __u64 tuple_sum(__u64 sum, const struct pkt *p, const __u8 *addrs,
				       __be16 sport, __be16 dport)
{
	sum += (__u32)bpf_csum_diff((__be32 *)p->saddr, 32, (__be32 *)addrs, 32, 0);
	sum = add16(add16(sum, sport), dport);
	return sub16(sub16(sum, p->sport), p->dport);
}

static __always_inline int transmit(struct xdp_md *ctx, __u32 ifindex)
{
	if (ifindex == ctx->ingress_ifindex) {
		count(VERDICT_TX);
		return XDP_TX;
	}
	count(VERDICT_REDIRECT);
	// XDP_DROP if the interface left the map since route() checked: the packet is rewritten.
	return bpf_redirect_map(&egress, ifindex, XDP_DROP);
}

#include "relay_dir.h"

SEC("xdp")
int xdp_turn_relay(struct xdp_md *ctx)
{
	struct pkt p = {};
	int v = parse(ctx, &p);

	if (v >= 0)
		return pass(v);
	if (p.family == FAMILY_V4)
		return relay(ctx, &p, sizeof(struct ip4));
	return relay(ctx, &p, sizeof(struct ip6));
}

// GPL-compatible, as XDP redirect helpers require; MIT for use outside the kernel.
char LICENSE[] SEC("license") = "Dual MIT/GPL";
