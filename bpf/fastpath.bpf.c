// SPDX-License-Identifier: GPL-2.0-only OR MIT
//
// Dual-licensed, unlike the rest of Turnstone (Apache-2.0): the kernel lends the FIB lookup
// helper only to programs with a GPL-compatible license.
//
// Turnstone's kernel fast path: a TC ingress program that relays ChannelData over UDP
// (RFC 8656 §12.5) without waking userspace.
//
//   client --ChannelData--> listener  ==>  relay --payload--> peer          (§12.6)
//   peer   --payload-----> relay      ==>  listener --ChannelData--> client (§12.7)
//
// It only reads maps that userspace (src/fastpath) fills from the core's flat tables
// (src/core/keys.rs, src/core/flat.rs). A packet it is unsure of goes on unchanged to the
// next program or the stack, where the userspace server handles it exactly as without this
// program: STUN, Send/Data indications, unknown channels, fragments, IP options or extension
// headers, expired entries, missing routes or neighbours, checksum-offloaded packets that
// would leave through a device, and anything too big for the path. Expiry is checked here
// too (a timestamp compare against CLOCK_MONOTONIC), so a stale entry never relays.
//
// Structs are shared with src/fastpath/maps.rs (#[repr(C)], sizes asserted on both sides).
// Ports are kept in network order, IPs as wire bytes (IPv4 in the first 4 of 16).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define AF_INET6 10
#define LOOPBACK_IFINDEX 1
#define OUT_TTL 64
#define CHANNEL_HEADER 4
#define MAX_SLOTS 65536
#define MAX_ENTRIES (1 << 20)

struct chan_key {
	__u8 client_ip[16];
	__u8 server_ip[16];
	__be16 client_port;
	__be16 server_port;
	__u16 channel;
	__u8 family;
	__u8 pad;
};

struct chan_val {
	__u8 relay_ip[16];
	__u8 peer_ip[16];
	__be16 relay_port;
	__be16 peer_port;
	__u32 slot;
	__u32 generation;
	__u32 pad;
	__u64 expires;
	__u64 permission_expires;
};

struct peer_key {
	__u8 relay_ip[16];
	__u8 peer_ip[16];
	__be16 relay_port;
	__be16 peer_port;
	__u8 family;
	__u8 pad[3];
};

struct peer_val {
	__u8 client_ip[16];
	__u8 server_ip[16];
	__be16 client_port;
	__be16 server_port;
	__u16 channel;
	__u16 pad;
	__u32 slot;
	__u32 generation;
	__u64 expires;
	__u64 permission_expires;
};

// One allocation: its generation (a reused slot never matches an old entry) and expiry.
struct slot {
	__u32 generation;
	__u32 pad;
	__u64 expires;
};

struct slot_stats {
	__u64 packets_to_peer;
	__u64 bytes_to_peer;
	__u64 packets_to_client;
	__u64 bytes_to_client;
};

// Why a matched packet went to userspace after all (index into `events`).
enum event {
	EV_RELAYED_TO_PEER,
	EV_RELAYED_TO_CLIENT,
	EV_STALE,
	EV_NO_ROUTE,
	EV_OFFLOADED,
	EV_TOO_BIG,
	EV_REWRITE_FAILED,
	EV_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct chan_key);
	__type(value, struct chan_val);
} channels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct peer_key);
	__type(value, struct peer_val);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct slot);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct slot_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} events SEC(".maps");

static __always_inline void count(__u32 ev)
{
	__u64 *n = bpf_map_lookup_elem(&events, &ev);
	if (n)
		*n += 1;
}

// TCX_NEXT / TC_ACT_UNSPEC: not ours; the next program or the stack decides.
static __always_inline int pass(void)
{
	return TC_ACT_UNSPEC;
}

// A rewrite that failed halfway leaves a packet neither path can use: it is dropped, and
// counted (the stack would have dropped nothing; this should stay at zero).
static __always_inline int drop_failed(void)
{
	count(EV_REWRITE_FAILED);
	return TC_ACT_SHOT;
}

static __always_inline int pass_because(__u32 ev)
{
	count(ev);
	return TC_ACT_UNSPEC;
}

// The allocation behind an entry is live and the entry itself has not expired.
static __always_inline int live(__u32 index, __u32 generation, __u64 expires,
				__u64 permission_expires, __u64 now)
{
	if (expires <= now || permission_expires <= now)
		return 0;
	struct slot *s = bpf_map_lookup_elem(&slots, &index);
	return s && s->generation == generation && s->expires > now;
}

static __always_inline void add_stats(__u32 index, int to_peer, __u64 bytes)
{
	struct slot_stats *st = bpf_map_lookup_elem(&stats, &index);
	if (!st)
		return;
	if (to_peer) {
		st->packets_to_peer += 1;
		st->bytes_to_peer += bytes;
	} else {
		st->packets_to_client += 1;
		st->bytes_to_client += bytes;
	}
}

static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

// A locally sent, checksum-offloaded packet (CHECKSUM_PARTIAL, as on loopback and veth)
// carries only the pseudo-header sum in its checksum field, and the kernel would finish it
// at a fixed offset that moving the UDP header invalidates. The field equal to the
// pseudo-header sum is how such a packet looks (a real checksum matches by chance once in
// 65536, and then the packet merely takes the userspace path).
static __always_inline int looks_offloaded(__be16 check, __u64 pseudo_sum)
{
	return check != 0 && check == (__be16)fold(pseudo_sum);
}

static __always_inline __u64 sum_words(const __u32 *w, int n)
{
	__u64 s = 0;
#pragma unroll
	for (int i = 0; i < n; i++)
		s += w[i];
	return s;
}

// Sums the UDP datagram at `l4` (`len` bytes, checksum field included) for a full
// checksum, in 256-byte chunks. Used only for IPv6 offloaded packets delivered locally.
struct chunk {
	__u8 bytes[256];
};

// Room for sum_payload, off the 512-byte stack.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct chunk);
} scratch SEC(".maps");

static __always_inline __s64 sum_payload(struct __sk_buff *skb, __u32 l4, __u32 len)
{
	__u32 zero = 0;
	struct chunk *c = bpf_map_lookup_elem(&scratch, &zero);
	if (!c)
		return -1;
	__u8 *buf = c->bytes;
	__s64 sum = 0;
	for (__u32 i = 0; i < 256; i++) {
		__u32 off = i * 256;
		if (off >= len)
			break;
		__u32 n = len - off;
		if (n >= 256) {
			if (bpf_skb_load_bytes(skb, l4 + off, buf, 256))
				return -1;
			sum = bpf_csum_diff(0, 0, (__be32 *)buf, 256, sum);
		} else {
			__builtin_memset(buf, 0, sizeof(c->bytes));
			// n is 1..255 here; the mask in asm keeps clang from handing the verifier an
			// unbounded copy.
			__u32 last = n - 1;
			asm volatile("%0 &= 255" : "+r"(last));
			if (bpf_skb_load_bytes(skb, l4 + off, buf, last + 1))
				return -1;
			sum = bpf_csum_diff(0, 0, (__be32 *)buf, 256, sum);
		}
		if (sum < 0)
			return -1;
	}
	return sum;
}

struct route {
	int local;
	__u32 ifindex;
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
};

// Where the rewritten packet goes. On loopback it is delivered here (every address on lo is
// local). Elsewhere it must leave through the interface it came in on, to a known
// neighbour, within that interface's MTU; otherwise userspace sends it.
static __always_inline int route(struct __sk_buff *skb, int v6, const __u8 *src,
				 const __u8 *dst, __u16 l3_len, struct route *r)
{
	if (skb->ifindex == LOOPBACK_IFINDEX) {
		r->local = 1;
		return 0;
	}
	struct bpf_fib_lookup fib = {};
	fib.family = v6 ? AF_INET6 : AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	fib.tot_len = l3_len;
	fib.ifindex = skb->ingress_ifindex;
	if (v6) {
		__builtin_memcpy(fib.ipv6_src, src, 16);
		__builtin_memcpy(fib.ipv6_dst, dst, 16);
	} else {
		__builtin_memcpy(&fib.ipv4_src, src, 4);
		__builtin_memcpy(&fib.ipv4_dst, dst, 4);
	}
	int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return EV_TOO_BIG;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS || fib.ifindex != skb->ingress_ifindex)
		return EV_NO_ROUTE;
	r->local = 0;
	r->ifindex = fib.ifindex;
	__builtin_memcpy(r->smac, fib.smac, ETH_ALEN);
	__builtin_memcpy(r->dmac, fib.dmac, ETH_ALEN);
	return 0;
}

static __always_inline int send(struct __sk_buff *skb, const struct route *r)
{
	if (r->local)
		return TC_ACT_OK;
	if (bpf_skb_store_bytes(skb, 0, r->dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, r->smac, ETH_ALEN, 0))
		return drop_failed();
	return bpf_redirect(r->ifindex, 0);
}

// What both directions need from a parsed UDP packet.
struct pkt {
	int v6;
	__u32 l4;	// offset of the UDP header
	__u16 udp_len;	// UDP length field (header + payload)
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__be16 check;
	__u32 first;	// the payload's first 4 bytes, as on the wire
};

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	// Fragments of one skb (GSO/GRO) are the stack's business.
	if (skb->gso_segs > 1)
		return -1;
	__u32 need = ETH_HLEN + sizeof(struct ipv6hdr) + sizeof(struct udphdr) + 4;
	if (skb->len < need)
		need = skb->len;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + need > end) {
		if (bpf_skb_pull_data(skb, need))
			return -1;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	struct udphdr *udp;
	__u32 l3_payload;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return -1;
		// No options, not a fragment (MF or offset), UDP.
		if (ip->ihl != 5 || ip->version != 4 || ip->protocol != IPPROTO_UDP ||
		    (ip->frag_off & bpf_htons(0x3fff)))
			return -1;
		__u16 tot = bpf_ntohs(ip->tot_len);
		if (tot < sizeof(*ip) || skb->len < ETH_HLEN + tot)
			return -1;
		l3_payload = tot - sizeof(*ip);
		p->v6 = 0;
		__builtin_memset(p->saddr, 0, 16);
		__builtin_memset(p->daddr, 0, 16);
		__builtin_memcpy(p->saddr, &ip->saddr, 4);
		__builtin_memcpy(p->daddr, &ip->daddr, 4);
		udp = (void *)(ip + 1);
		p->l4 = ETH_HLEN + sizeof(*ip);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return -1;
		// No extension headers (fragments among them).
		if (ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP)
			return -1;
		l3_payload = bpf_ntohs(ip6->payload_len);
		if (skb->len < ETH_HLEN + sizeof(*ip6) + l3_payload)
			return -1;
		p->v6 = 1;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		udp = (void *)(ip6 + 1);
		p->l4 = ETH_HLEN + sizeof(*ip6);
	} else {
		return -1;
	}
	if ((void *)(udp + 1) + 4 > end)
		return -1;
	p->udp_len = bpf_ntohs(udp->len);
	if (p->udp_len != l3_payload || p->udp_len < sizeof(*udp) + 4)
		return -1;
	p->sport = udp->source;
	p->dport = udp->dest;
	p->check = udp->check;
	// IPv6 UDP without a checksum is invalid (RFC 8200 §8.1): the stack drops it.
	if (p->v6 && p->check == 0)
		return -1;
	__builtin_memcpy(&p->first, (void *)(udp + 1), 4);
	return 0;
}

// The pseudo-header's address and length words (RFC 768, RFC 8200 §8.1); the protocol
// never changes, so it is left out of every difference.
static __always_inline void pseudo_words(const __u8 *src, const __u8 *dst, __u16 len, int v6,
					 __u32 *w)
{
	__builtin_memset(w, 0, 9 * 4);
	if (v6) {
		__builtin_memcpy(w, src, 16);
		__builtin_memcpy(w + 4, dst, 16);
	} else {
		__builtin_memcpy(w, src, 4);
		__builtin_memcpy(w + 4, dst, 4);
	}
	__be16 l = bpf_htons(len);
	__builtin_memcpy(w + 8, &l, 2);
}

// Writes the new IP header fields: addresses, length and TTL (a fresh datagram from the
// relay, as userspace would send it), with the IPv4 header checksum recomputed.
static __always_inline int write_l3(struct __sk_buff *skb, int v6, const __u8 *src,
				    const __u8 *dst, __u16 l3_payload)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (v6) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;
		if ((void *)(ip6 + 1) > end)
			return -1;
		__builtin_memcpy(&ip6->saddr, src, 16);
		__builtin_memcpy(&ip6->daddr, dst, 16);
		ip6->payload_len = bpf_htons(l3_payload);
		ip6->hop_limit = OUT_TTL;
		return 0;
	}
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end)
		return -1;
	__builtin_memcpy(&ip->saddr, src, 4);
	__builtin_memcpy(&ip->daddr, dst, 4);
	ip->tot_len = bpf_htons(l3_payload + sizeof(*ip));
	ip->ttl = OUT_TTL;
	ip->check = 0;
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0);
	if (sum < 0)
		return -1;
	ip->check = ~fold(sum);
	return 0;
}

// Writes the 8-byte UDP header at `l4`, keeping `check` for the incremental updates.
static __always_inline int write_udp(struct __sk_buff *skb, __u32 l4, __be16 sport,
				     __be16 dport, __u16 len, __be16 check)
{
	struct udphdr h = {
		.source = sport,
		.dest = dport,
		.len = bpf_htons(len),
		.check = check,
	};
	return bpf_skb_store_bytes(skb, l4, &h, sizeof(h), 0);
}

// RFC 8656 §12.6: a client's ChannelData on a bound channel becomes a datagram from the
// relay address to the peer.
static __always_inline int to_peer(struct __sk_buff *skb, struct pkt *p)
{
	__u16 number = bpf_ntohl(p->first) >> 16;
	__u16 data_len = bpf_ntohl(p->first) & 0xffff;
	__u16 payload = p->udp_len - sizeof(struct udphdr);
	// Padding up to a multiple of 4 may follow over UDP too (§12.5); anything else is
	// userspace's to judge.
	if (CHANNEL_HEADER + data_len > payload || payload - CHANNEL_HEADER - data_len > 3)
		return pass();

	struct chan_key k = {};
	__builtin_memcpy(k.client_ip, p->saddr, 16);
	__builtin_memcpy(k.server_ip, p->daddr, 16);
	k.client_port = p->sport;
	k.server_port = p->dport;
	k.channel = number;
	k.family = p->v6 ? 6 : 4;
	struct chan_val *v = bpf_map_lookup_elem(&channels, &k);
	if (!v)
		return pass();
	if (!live(v->slot, v->generation, v->expires, v->permission_expires, bpf_ktime_get_ns()))
		return pass_because(EV_STALE);

	__u8 relay_ip[16], peer_ip[16];
	__builtin_memcpy(relay_ip, v->relay_ip, 16);
	__builtin_memcpy(peer_ip, v->peer_ip, 16);
	__be16 relay_port = v->relay_port, peer_port = v->peer_port;
	__u32 slot = v->slot;
	__u16 new_udp = sizeof(struct udphdr) + data_len;
	__u16 l3_hdr = p->v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);

	__u32 old_pseudo[9], new_pseudo[9];
	pseudo_words(p->saddr, p->daddr, p->udp_len, p->v6, old_pseudo);
	pseudo_words(relay_ip, peer_ip, new_udp, p->v6, new_pseudo);
	int offloaded = looks_offloaded(p->check, sum_words(old_pseudo, 9) +
						       (__u64)bpf_htons(IPPROTO_UDP));

	struct route r = {};
	int ev = route(skb, p->v6, relay_ip, peer_ip, l3_hdr + new_udp, &r);
	if (ev)
		return pass_because(ev);
	if (offloaded && !r.local)
		return pass_because(EV_OFFLOADED);

	// The words that leave the checksummed segment or change in it: ports, length, the
	// channel header and any padding (RFC 1624 incremental update).
	__u32 pad = payload - CHANNEL_HEADER - data_len;
	__u32 old_w[4] = {}, new_w[3] = {};
	__builtin_memcpy(&old_w[0], &p->sport, 2);
	__builtin_memcpy((__u8 *)&old_w[0] + 2, &p->dport, 2);
	__be16 old_len = bpf_htons(p->udp_len), new_len = bpf_htons(new_udp);
	__builtin_memcpy(&old_w[1], &old_len, 2);
	old_w[2] = p->first;
	__builtin_memcpy(&new_w[0], &relay_port, 2);
	__builtin_memcpy((__u8 *)&new_w[0] + 2, &peer_port, 2);
	__builtin_memcpy(&new_w[1], &new_len, 2);
	if (pad) {
		// The last payload word holds the padding in its tail: it leaves the sum.
		__u32 tail = 0;
		if (bpf_skb_load_bytes(skb, p->l4 + p->udp_len - 4, &tail, 4))
			return pass_because(EV_REWRITE_FAILED);
		old_w[3] = tail;
		__u32 word = bpf_ntohl(tail);
		word &= ~((1u << (pad * 8)) - 1);
		new_w[2] = bpf_htonl(word);
	}
	__s64 data_diff = bpf_csum_diff(old_w, sizeof(old_w), new_w, sizeof(new_w), 0);
	__s64 pseudo_diff = bpf_csum_diff(old_pseudo, sizeof(old_pseudo), new_pseudo,
					  sizeof(new_pseudo), 0);
	if (data_diff < 0 || pseudo_diff < 0)
		return pass_because(EV_REWRITE_FAILED);

	// Past this point the packet is changed: a failure drops it.
	if (pad && bpf_skb_change_tail(skb, p->l4 + p->udp_len - pad, 0))
		return drop_failed();
	if (bpf_skb_adjust_room(skb, -CHANNEL_HEADER, BPF_ADJ_ROOM_NET, 0))
		return drop_failed();
	if (write_l3(skb, p->v6, relay_ip, peer_ip, new_udp))
		return drop_failed();
	__u32 l4 = p->l4;
	__u64 csum_flags = p->v6 ? 0 : BPF_F_MARK_MANGLED_0;
	if (offloaded && !p->v6) {
		// Delivered here, from an offloaded packet: IPv4 may carry no checksum (RFC 768).
		if (write_udp(skb, l4, relay_port, peer_port, new_udp, 0))
			return drop_failed();
	} else if (offloaded) {
		// IPv6 needs one: compute it in full (RFC 8200 §8.1).
		if (write_udp(skb, l4, relay_port, peer_port, new_udp, 0))
			return drop_failed();
		__s64 sum = sum_payload(skb, l4, new_udp);
		if (sum < 0)
			return drop_failed();
		__u16 c = ~fold((__u64)sum + sum_words(new_pseudo, 9) +
				(__u64)bpf_htons(IPPROTO_UDP));
		if (c == 0)
			c = 0xffff;
		if (bpf_skb_store_bytes(skb, l4 + 6, &c, 2, 0))
			return drop_failed();
	} else {
		if (write_udp(skb, l4, relay_port, peer_port, new_udp, p->check) ||
		    bpf_l4_csum_replace(skb, l4 + 6, 0, data_diff, csum_flags) ||
		    bpf_l4_csum_replace(skb, l4 + 6, 0, pseudo_diff, csum_flags | BPF_F_PSEUDO_HDR))
			return drop_failed();
	}
	add_stats(slot, 1, data_len);
	count(EV_RELAYED_TO_PEER);
	return send(skb, &r);
}

// RFC 8656 §12.7: a peer's datagram to a relay address with a bound channel becomes
// ChannelData from the listener to the client (no padding over UDP, as userspace sends).
static __always_inline int to_client(struct __sk_buff *skb, struct pkt *p)
{
	struct peer_key k = {};
	__builtin_memcpy(k.relay_ip, p->daddr, 16);
	__builtin_memcpy(k.peer_ip, p->saddr, 16);
	k.relay_port = p->dport;
	k.peer_port = p->sport;
	k.family = p->v6 ? 6 : 4;
	struct peer_val *v = bpf_map_lookup_elem(&peers, &k);
	if (!v)
		return pass();
	if (!live(v->slot, v->generation, v->expires, v->permission_expires, bpf_ktime_get_ns()))
		return pass_because(EV_STALE);

	__u8 client_ip[16], server_ip[16];
	__builtin_memcpy(client_ip, v->client_ip, 16);
	__builtin_memcpy(server_ip, v->server_ip, 16);
	__be16 client_port = v->client_port, server_port = v->server_port;
	__u16 number = v->channel;
	__u32 slot = v->slot;
	__u16 data_len = p->udp_len - sizeof(struct udphdr);
	__u32 grown = (__u32)p->udp_len + CHANNEL_HEADER;
	__u16 l3_hdr = p->v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	if (grown + l3_hdr > 0xffff)
		return pass_because(EV_TOO_BIG);
	__u16 new_udp = grown;

	__u32 old_pseudo[9], new_pseudo[9];
	pseudo_words(p->saddr, p->daddr, p->udp_len, p->v6, old_pseudo);
	pseudo_words(server_ip, client_ip, new_udp, p->v6, new_pseudo);
	int offloaded = looks_offloaded(p->check, sum_words(old_pseudo, 9) +
						       (__u64)bpf_htons(IPPROTO_UDP));

	struct route r = {};
	int ev = route(skb, p->v6, server_ip, client_ip, l3_hdr + new_udp, &r);
	if (ev)
		return pass_because(ev);
	if (offloaded && !r.local)
		return pass_because(EV_OFFLOADED);

	__u32 header = bpf_htonl((__u32)number << 16 | data_len);
	__u32 old_w[2] = {}, new_w[3] = {};
	__builtin_memcpy(&old_w[0], &p->sport, 2);
	__builtin_memcpy((__u8 *)&old_w[0] + 2, &p->dport, 2);
	__be16 old_len = bpf_htons(p->udp_len), new_len = bpf_htons(new_udp);
	__builtin_memcpy(&old_w[1], &old_len, 2);
	__builtin_memcpy(&new_w[0], &server_port, 2);
	__builtin_memcpy((__u8 *)&new_w[0] + 2, &client_port, 2);
	__builtin_memcpy(&new_w[1], &new_len, 2);
	new_w[2] = header;
	__s64 data_diff = bpf_csum_diff(old_w, sizeof(old_w), new_w, sizeof(new_w), 0);
	__s64 pseudo_diff = bpf_csum_diff(old_pseudo, sizeof(old_pseudo), new_pseudo,
					  sizeof(new_pseudo), 0);
	if (data_diff < 0 || pseudo_diff < 0)
		return pass_because(EV_REWRITE_FAILED);

	if (bpf_skb_adjust_room(skb, CHANNEL_HEADER, BPF_ADJ_ROOM_NET, 0))
		return pass_because(EV_REWRITE_FAILED);
	// The room sits between the IP and the old UDP header: the new UDP header goes at its
	// start and the channel header over the old UDP header's last 4 bytes.
	__u32 l4 = p->l4;
	__u64 csum_flags = p->v6 ? 0 : BPF_F_MARK_MANGLED_0;
	if (write_l3(skb, p->v6, server_ip, client_ip, new_udp) ||
	    write_udp(skb, l4, server_port, client_port, new_udp, p->check) ||
	    bpf_skb_store_bytes(skb, l4 + sizeof(struct udphdr), &header, 4, 0) ||
	    bpf_l4_csum_replace(skb, l4 + 6, 0, data_diff, csum_flags) ||
	    bpf_l4_csum_replace(skb, l4 + 6, 0, pseudo_diff, csum_flags | BPF_F_PSEUDO_HDR))
		return drop_failed();
	add_stats(slot, 0, data_len);
	count(EV_RELAYED_TO_CLIENT);
	return send(skb, &r);
}

SEC("classifier")
int turnstone_ingress(struct __sk_buff *skb)
{
	struct pkt p = {};
	if (parse(skb, &p))
		return pass();
	// ChannelData starts 0b01 (RFC 8656 §12: channels 0x4000–0x4FFF); a STUN message
	// starts 0b00 and is never relayed here.
	__u8 first = ((__u8 *)&p.first)[0];
	if (first >= 0x40 && first <= 0x4f) {
		int rc = to_peer(skb, &p);
		if (rc != TC_ACT_UNSPEC)
			return rc;
	}
	return to_client(skb, &p);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
