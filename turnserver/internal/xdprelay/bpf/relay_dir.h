// The two directions of relay.c, split out to keep each file readable. Every function here
// takes the IP header length l3 as a constant at each call site, so the
// verifier sees constant packet offsets.

static __always_inline void account(__u32 alloc, int to_peer, __u16 n)
{
	struct alloc_stats *s = bpf_map_lookup_elem(&alloc_counters, &alloc);

	if (!s)
		return;
	if (to_peer) {
		s->to_peer_packets++;
		s->to_peer_bytes += n;
	} else {
		s->to_client_packets++;
		s->to_client_bytes += n;
	}
}

// to_peer: client → peer. Strip the ChannelData header and any padding, send the data from
// the relay address to the peer. n (the length field) has been checked: 4 + n <= plen <= 4 + n + 3.
static __noinline int to_peer(struct xdp_md *ctx, struct pkt *p, const struct client_val *v,
				   __u16 n, const int l3)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *cd = data + ETH_HLEN + l3 + UDP_HLEN;
	struct nexthop_val *nh;
	__u16 extra = p->plen - CD_HLEN - n, w;
	__u64 sum = 0;
	int r;

	if ((void *)(cd + CD_HLEN) > end || n > MAX_PLEN)
		return pass(VERDICT_NOT_PLAIN_UDP);
	// The header words and the padding bytes leave the checksummed data. A padding byte at
	// an even offset from the UDP header is the high half of its 16-bit word.
	__builtin_memcpy(&w, cd, 2);
	sum = sub16(sum, w);
	__builtin_memcpy(&w, cd + 2, 2);
	sum = sub16(sum, w);
#pragma unroll
	for (int i = 0; i < 3; i++) {
		__u8 *b = cd + CD_HLEN + n + i;
		if (i >= extra)
			break;
		if ((void *)(b + 1) > end)
			return pass(VERDICT_BAD_LENGTH);
		sum = sub16(sum, ((n + i) & 1) ? bpf_htons(*b) : bpf_htons((__u16)*b << 8));
	}
	sum = tuple_sum(sum, p, v->relay_ip, v->relay_port, v->peer_port);

	r = route(ctx, &nh, p, v->relay_ip, v->peer_ip, l3 + UDP_HLEN + n);
	if (r >= 0)
		return pass(r);

	// Payload stays where it is: drop the trailing padding (and any Ethernet trailer), then
	// move the start 4 bytes forward over the old headers and write fresh ones there.
	if (extra + p->trailer && bpf_xdp_adjust_tail(ctx, -(int)(extra + p->trailer)))
		return count(VERDICT_ADJUST_FAILED), XDP_DROP;
	if (bpf_xdp_adjust_head(ctx, CD_HLEN))
		return count(VERDICT_ADJUST_FAILED), XDP_DROP;
	if (write_headers(ctx, p, nh, v->relay_ip, v->peer_ip, v->relay_port, v->peer_port,
			  UDP_HLEN + n, sum, l3))
		return count(VERDICT_ADJUST_FAILED), XDP_DROP;
	account(v->alloc, 1, n);
	return transmit(ctx, nh->ifindex);
}

// to_client: peer → client. Prepend the ChannelData header, pad the data to a multiple of
// 4 as pion does (RFC 8656 §12.5: optional over UDP, so when the frame has no tailroom the
// datagram goes unpadded), send from the listen address to the client.
static __noinline int to_client(struct xdp_md *ctx, struct pkt *p, const struct peer_val *v,
				     const int l3)
{
	struct nexthop_val *nh;
	__u16 n = p->plen, pad = (4 - (n & 3)) & 3;
	__u64 sum = 0;
	int r, grow;

	if (n > MAX_PLEN) // parse() checked; repeated for the verifier, which sees n anew here
		return pass(VERDICT_NOT_PLAIN_UDP);

	r = route(ctx, &nh, p, v->server_ip, v->client_ip, l3 + UDP_HLEN + CD_HLEN + n + pad);
	if (r >= 0)
		return pass(r);

	grow = (int)pad - (int)p->trailer;
	if (grow && bpf_xdp_adjust_tail(ctx, grow)) {
		if (grow < 0)
			return count(VERDICT_ADJUST_FAILED), XDP_DROP;
		pad = 0; // no tailroom: unpadded is valid over UDP
		if (p->trailer && bpf_xdp_adjust_tail(ctx, -(int)p->trailer))
			return count(VERDICT_ADJUST_FAILED), XDP_DROP;
	}
	if (pad) {
		void *data = (void *)(long)ctx->data;
		void *end = (void *)(long)ctx->data_end;
#pragma unroll
		for (int i = 0; i < 3; i++) {
			__u8 *b = data + ETH_HLEN + l3 + UDP_HLEN + n + i;
			if (i >= pad)
				break;
			if ((void *)(b + 1) > end)
				return count(VERDICT_ADJUST_FAILED), XDP_DROP;
			*b = 0; // zero padding adds nothing to the checksum
		}
	}
	if (bpf_xdp_adjust_head(ctx, -CD_HLEN))
		return count(VERDICT_ADJUST_FAILED), XDP_DROP;

	sum = add16(sum, v->channel);
	sum = add16(sum, bpf_htons(n));
	sum = tuple_sum(sum, p, v->client_ip, v->server_port, v->client_port);
	if (write_headers(ctx, p, nh, v->server_ip, v->client_ip, v->server_port, v->client_port,
			  UDP_HLEN + CD_HLEN + n + pad, sum, l3))
		return count(VERDICT_ADJUST_FAILED), XDP_DROP;
	{
		void *data = (void *)(long)ctx->data;
		void *end = (void *)(long)ctx->data_end;
		__be16 *cd = data + ETH_HLEN + l3 + UDP_HLEN;
		if ((void *)(cd + 2) > end)
			return count(VERDICT_ADJUST_FAILED), XDP_DROP;
		cd[0] = v->channel;
		cd[1] = bpf_htons(n);
	}
	account(v->alloc, 0, n);
	return transmit(ctx, nh->ifindex);
}

// relay looks the datagram up as a client's ChannelData first (only datagrams whose first
// two bits are 01 can be: STUN messages start with 00), then as a peer's datagram.
static __noinline int relay(struct xdp_md *ctx, struct pkt *p, const int l3)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *cd = data + ETH_HLEN + l3 + UDP_HLEN;

	if (p->plen >= CD_HLEN && (void *)(cd + CD_HLEN) <= end && (cd[0] & 0xc0) == 0x40) {
		struct client_key ck = {};
		struct client_val *cv;
		__u16 n = ((__u16)cd[2] << 8) | cd[3];

		__builtin_memcpy(ck.client_ip, p->saddr, 16);
		__builtin_memcpy(ck.server_ip, p->daddr, 16);
		ck.client_port = p->sport;
		ck.server_port = p->dport;
		__builtin_memcpy(&ck.channel, cd, 2);
		ck.family = p->family;
		cv = bpf_map_lookup_elem(&client_bindings, &ck);
		if (cv) {
			// RFC 8656 §12.5: a datagram shorter than the length field claims is discarded
			// (user space does that); over UDP up to 3 bytes of padding may follow the data.
			// More than that is odd enough to leave to user space too.
			if (p->plen < CD_HLEN + n || p->plen > CD_HLEN + n + 3)
				return pass(VERDICT_BAD_LENGTH);
			return to_peer(ctx, p, cv, n, l3);
		}
	}
	{
		struct peer_key pk = {};
		struct peer_val *pv;

		__builtin_memcpy(pk.peer_ip, p->saddr, 16);
		__builtin_memcpy(pk.relay_ip, p->daddr, 16);
		pk.peer_port = p->sport;
		pk.relay_port = p->dport;
		pk.family = p->family;
		pv = bpf_map_lookup_elem(&peer_bindings, &pk);
		if (pv)
			return to_client(ctx, p, pv, l3);
	}
	return pass(VERDICT_NO_BINDING);
}
