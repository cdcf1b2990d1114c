/* IPv6 packet parsing, NAT rewriting and reject-packet building for the feature
 * programs. Parsing walks up to FEAT_V6_EXT extension headers to the transport
 * protocol and its ports (for policy); only packets without extension headers are
 * rewritten (as IPv4 packets with options are not). The reject packets are built in
 * a per-CPU scratch buffer (an IPv6 header alone is 40 bytes; the BPF stack has 512
 * for a whole call chain).
 */
#ifndef STICKYIP_FEAT_PKT6_H
#define STICKYIP_FEAT_PKT6_H

#include "feat_pkt.h"
#include <uapi/linux/ipv6.h>
#include <uapi/linux/icmpv6.h>

#define FEAT_V6_EXT 4
#define NH_HOP 0
#define NH_ROUTING 43
#define NH_FRAGMENT 44
#define NH_AUTH 51
#define NH_DSTOPTS 60
#define NH_ICMP6 58

#define IP6_SRC_OFF (ETH_HLEN + offsetof(struct ipv6hdr, saddr))
#define IP6_DST_OFF (ETH_HLEN + offsetof(struct ipv6hdr, daddr))
#define L4_6_OFF (ETH_HLEN + sizeof(struct ipv6hdr))
#define L4_6_SPORT_OFF (L4_6_OFF)
#define L4_6_DPORT_OFF (L4_6_OFF + 2)

struct feat_tuple6 {
    __be32 saddr[4];
    __be32 daddr[4];
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 natable;       /* no extension header: ports valid and rewritable */
    __u8 icmp_type;     /* ICMPv6: its type (neighbour discovery passes policy) */
    __u8 pad;
    __u16 payload_len;  /* host order */
};

static __always_inline int feat_addr6_eq(const __be32 *a, const __be32 *b)
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline void feat_addr6_copy(__be32 *to, const __be32 *from)
{
    to[0] = from[0];
    to[1] = from[1];
    to[2] = from[2];
    to[3] = from[3];
}

/* Returns 0 for an IPv6 packet (tuple filled), -1 otherwise. */
static __always_inline int feat_parse6(struct __sk_buff *skb, struct feat_tuple6 *t)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct ipv6hdr *ip6 = data + ETH_HLEN;
    __u32 off = L4_6_OFF;
    __u8 next;
    __u8 hdr[4];
    int i;

    if ((void *)(ip6 + 1) > data_end)
        return -1;
    if (eth->h_proto != bpf_htons(ETH_P_IPV6))
        return -1;
    feat_addr6_copy(t->saddr, ip6->saddr.in6_u.u6_addr32);
    feat_addr6_copy(t->daddr, ip6->daddr.in6_u.u6_addr32);
    t->payload_len = bpf_ntohs(ip6->payload_len);
    t->sport = 0;
    t->dport = 0;
    t->natable = 0;
    t->icmp_type = 0;
    t->pad = 0;
    next = ip6->nexthdr;
#pragma unroll
    for (i = 0; i < FEAT_V6_EXT; i++) {
        if (next != NH_HOP && next != NH_ROUTING && next != NH_FRAGMENT &&
            next != NH_AUTH && next != NH_DSTOPTS)
            break;
        if (bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)) < 0)
            break;
        if (next == NH_FRAGMENT) {
            if (((hdr[2] << 8) | hdr[3]) & 0xfff8) {  /* not the first fragment */
                t->proto = hdr[0];
                return 0;
            }
            off += 8;
        } else if (next == NH_AUTH) {
            off += (hdr[1] + 2) * 4;
        } else {
            off += (hdr[1] + 1) * 8;
        }
        next = hdr[0];
    }
    t->proto = next;
    if (next == IPPROTO_TCP || next == IPPROTO_UDP || next == IPPROTO_SCTP) {
        __be16 ports[2];
        if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
            return 0;
        t->sport = ports[0];
        t->dport = ports[1];
        t->natable = off == L4_6_OFF;
    } else if (next == NH_ICMP6) {
        if (bpf_skb_load_bytes(skb, off, hdr, 1) == 0)
            t->icmp_type = hdr[0];
    }
    return 0;
}

/* Neighbour discovery (router and neighbour solicitation and advertisement, redirect)
 * is link plumbing, not traffic a NetworkPolicy speaks of: it always passes. */
static __always_inline int feat_is_nd(struct feat_tuple6 *t)
{
    return t->proto == NH_ICMP6 && t->icmp_type >= 133 && t->icmp_type <= 137;
}

static __always_inline int feat_l4_csum_off6(__u8 proto)
{
    return feat_l4_csum_at(proto, L4_6_OFF);
}

/* Rewrite a 16-byte address (IPv6 has no header checksum; the transport checksum
 * covers the address through its pseudo header). ``from`` and ``to`` must not point
 * into the packet. */
static __always_inline void feat_nat_addr6(struct __sk_buff *skb, int off, __be32 *from,
                                           __be32 *to, __u8 proto)
{
    int csum = feat_l4_csum_off6(proto);

    if (feat_addr6_eq(from, to))
        return;
    /* from 0 to the difference: the checksum takes the 16-byte change at once */
    if (csum)
        feat_l4_csum_update(skb, csum, 0, bpf_csum_diff(from, 16, to, 16, 0),
                            BPF_F_PSEUDO_HDR, proto);
    bpf_skb_store_bytes(skb, off, to, 16, 0);
}

static __always_inline void feat_nat_port6(struct __sk_buff *skb, int off, __be16 from,
                                           __be16 to, __u8 proto)
{
    feat_nat_port_at(skb, off, feat_l4_csum_off6(proto), from, to, proto);
}

static __always_inline void feat_ip6_header(struct ipv6hdr *ip6, __be32 *saddr, __be32 *daddr,
                                            __u8 next, __u16 payload)
{
    __builtin_memset(ip6, 0, sizeof(*ip6));
    ip6->version = 6;
    ip6->payload_len = bpf_htons(payload);
    ip6->nexthdr = next;
    ip6->hop_limit = 64;
    feat_addr6_copy(ip6->saddr.in6_u.u6_addr32, saddr);
    feat_addr6_copy(ip6->daddr.in6_u.u6_addr32, daddr);
}

/* The IPv6 pseudo header's checksum (RFC 8200 8.1): addresses, length, next header. */
static __always_inline __s64 feat_pseudo6_sum(__be32 *saddr, __be32 *daddr, __u8 next,
                                              __u32 len)
{
    __be32 tail[2] = {bpf_htonl(len), bpf_htonl(next)};
    __s64 sum = bpf_csum_diff(0, 0, saddr, 16, 0);

    sum = bpf_csum_diff(0, 0, daddr, 16, sum);
    return bpf_csum_diff(0, 0, tail, sizeof(tail), sum);
}

struct feat_rst6 {
    struct ipv6hdr ip;
    struct tcphdr tcp;
};

struct feat_icmp6_unreach {
    struct ipv6hdr ip;
    __u8 type;
    __u8 code;
    __u16 check;
    __u32 unused;
    struct ipv6hdr orig;
    __u8 orig_l4[8];
};

union feat_scratch6 {
    struct feat_rst6 rst;
    struct feat_icmp6_unreach unreach;
};

/* Not pinned: a per-CPU buffer of this program object only. */
BPF_PERCPU_ARRAY(stickyip_scr6, union feat_scratch6, 1);

/* Answer a TCP segment over IPv6 with a RST from its destination. */
static __always_inline int feat_reject_tcp6(struct __sk_buff *skb, struct feat_tuple6 *t)
{
    struct tcphdr oth;
    struct feat_rst6 *r;
    __u32 payload, zero = 0;
    __s64 sum;
    union feat_scratch6 *buf = stickyip_scr6.lookup(&zero);

    if (!buf)
        return TC_ACT_SHOT;
    r = &buf->rst;
    if (bpf_skb_load_bytes(skb, L4_6_OFF, &oth, sizeof(oth)) < 0)
        return TC_ACT_SHOT;
    if (oth.rst)
        return TC_ACT_SHOT;
    payload = t->payload_len - oth.doff * 4;
    __builtin_memset(&r->tcp, 0, sizeof(r->tcp));
    r->tcp.source = oth.dest;
    r->tcp.dest = oth.source;
    r->tcp.doff = 5;
    r->tcp.rst = 1;
    if (oth.ack) {
        r->tcp.seq = oth.ack_seq;
    } else {
        r->tcp.ack = 1;
        r->tcp.ack_seq = bpf_htonl(bpf_ntohl(oth.seq) + payload + oth.syn + oth.fin);
    }
    sum = feat_pseudo6_sum(t->daddr, t->saddr, IPPROTO_TCP, sizeof(r->tcp));
    sum = bpf_csum_diff(0, 0, (void *)&r->tcp, sizeof(r->tcp), sum);
    r->tcp.check = feat_csum_fold(sum);
    feat_ip6_header(&r->ip, t->daddr, t->saddr, IPPROTO_TCP, sizeof(r->tcp));
    return feat_bounce(skb, r, sizeof(*r));
}

/* Answer a datagram over IPv6 with ICMPv6 port unreachable from its destination. */
static __always_inline int feat_reject_icmp6(struct __sk_buff *skb, struct feat_tuple6 *t)
{
    struct feat_icmp6_unreach *m;
    __u32 len = sizeof(*m) - sizeof(struct ipv6hdr), zero = 0;
    __s64 sum;
    union feat_scratch6 *buf = stickyip_scr6.lookup(&zero);

    if (!buf)
        return TC_ACT_SHOT;
    m = &buf->unreach;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &m->orig, sizeof(m->orig)) < 0)
        return TC_ACT_SHOT;
    if (bpf_skb_load_bytes(skb, L4_6_OFF, m->orig_l4, sizeof(m->orig_l4)) < 0)
        return TC_ACT_SHOT;
    m->type = ICMPV6_DEST_UNREACH;
    m->code = ICMPV6_PORT_UNREACH;
    m->check = 0;
    m->unused = 0;
    sum = feat_pseudo6_sum(t->daddr, t->saddr, NH_ICMP6, len);
    sum = bpf_csum_diff(0, 0, (void *)&m->type, len, sum);
    m->check = feat_csum_fold(sum);
    feat_ip6_header(&m->ip, t->daddr, t->saddr, NH_ICMP6, len);
    return feat_bounce(skb, m, sizeof(*m));
}

#endif
