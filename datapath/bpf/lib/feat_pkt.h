/* Packet parsing, NAT rewriting and reject-packet building for the feature
 * programs (services and policy), IPv4; feat_pkt6.h does the same for IPv6. Packets
 * with IP options or fragments are parsed for policy (ports 0) but never rewritten.
 */
#ifndef STICKYIP_FEAT_PKT_H
#define STICKYIP_FEAT_PKT_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/icmp.h>
#include <uapi/linux/pkt_cls.h>

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

#define IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define IP_SRC_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))
#define L4_OFF (ETH_HLEN + sizeof(struct iphdr))
#define L4_SPORT_OFF (L4_OFF)
#define L4_DPORT_OFF (L4_OFF + 2)

struct feat_tuple {
    __be32 saddr;
    __be32 daddr;
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 natable;   /* no IP options, not a fragment: ports valid and rewritable */
    __u16 tot_len;  /* host order */
};

/* Returns 0 for an IPv4 packet (tuple filled), -1 otherwise. */
static __always_inline int feat_parse(struct __sk_buff *skb, struct feat_tuple *t)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + ETH_HLEN;

    if ((void *)(ip + 1) > data_end)
        return -1;
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        return -1;
    t->saddr = ip->saddr;
    t->daddr = ip->daddr;
    t->proto = ip->protocol;
    t->sport = 0;
    t->dport = 0;
    t->natable = 0;
    t->tot_len = bpf_ntohs(ip->tot_len);
    if (ip->ihl != 5 || (ip->frag_off & bpf_htons(0x1fff)))
        return 0;
    if (t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP || t->proto == IPPROTO_SCTP) {
        __be16 *ports = (void *)(ip + 1);
        if ((void *)(ports + 2) > data_end)
            return 0;
        t->sport = ports[0];
        t->dport = ports[1];
        t->natable = 1;
    }
    return 0;
}

/* Where the transport checksum sits when the transport header starts at ``l4``
 * (0: a protocol whose checksum NAT leaves alone); the same for both families. */
static __always_inline int feat_l4_csum_at(__u8 proto, int l4)
{
    if (proto == IPPROTO_TCP)
        return l4 + offsetof(struct tcphdr, check);
    if (proto == IPPROTO_UDP)
        return l4 + offsetof(struct udphdr, check);
    return 0;
}

static __always_inline int feat_l4_csum_off(__u8 proto)
{
    return feat_l4_csum_at(proto, L4_OFF);
}

/* Fix the transport checksum at ``csum`` (0: none) for a field that changed from
 * ``from`` to ``to`` (``flags`` as bpf_l4_csum_replace takes them); a UDP checksum
 * of 0 (none sent) stays 0. */
static __always_inline void feat_l4_csum_update(struct __sk_buff *skb, int csum, __u64 from,
                                                __u64 to, __u64 flags, __u8 proto)
{
    if (!csum)
        return;
    if (proto == IPPROTO_UDP)
        flags |= BPF_F_MARK_MANGLED_0;
    bpf_l4_csum_replace(skb, csum, from, to, flags);
}

static __always_inline void feat_nat_addr(struct __sk_buff *skb, int off, __be32 from, __be32 to,
                                          __u8 proto)
{
    if (from == to)
        return;
    feat_l4_csum_update(skb, feat_l4_csum_off(proto), from, to,
                        BPF_F_PSEUDO_HDR | sizeof(to), proto);
    bpf_l3_csum_replace(skb, IP_CSUM_OFF, from, to, sizeof(to));
    bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

/* Rewrite the port at ``off``, fixing the transport checksum at ``csum`` (0: none);
 * the same for both families (ports are not in the pseudo header). */
static __always_inline void feat_nat_port_at(struct __sk_buff *skb, int off, int csum,
                                             __be16 from, __be16 to, __u8 proto)
{
    if (from == to)
        return;
    feat_l4_csum_update(skb, csum, from, to, sizeof(to), proto);
    bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

static __always_inline void feat_nat_port(struct __sk_buff *skb, int off, __be16 from, __be16 to,
                                          __u8 proto)
{
    feat_nat_port_at(skb, off, feat_l4_csum_off(proto), from, to, proto);
}

/* Swap MAC addresses so that the packet can be sent back where it came from. */
static __always_inline int feat_swap_eth(struct __sk_buff *skb)
{
    struct ethhdr eth;
    unsigned char tmp[ETH_ALEN];

    if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
        return -1;
    __builtin_memcpy(tmp, eth.h_source, ETH_ALEN);
    __builtin_memcpy(eth.h_source, eth.h_dest, ETH_ALEN);
    __builtin_memcpy(eth.h_dest, tmp, ETH_ALEN);
    return bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0);
}

/* Send the packet back out of the interface it came in on as the `len` bytes at
 * `reply` (an IP packet answering it) behind its own Ethernet header, the two
 * addresses swapped. */
static __always_inline int feat_bounce(struct __sk_buff *skb, void *reply, __u32 len)
{
    if (bpf_skb_change_tail(skb, ETH_HLEN + len, 0) < 0)
        return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, ETH_HLEN, reply, len, 0) < 0)
        return TC_ACT_SHOT;
    if (feat_swap_eth(skb) < 0)
        return TC_ACT_SHOT;
    return bpf_redirect(skb->ifindex, 0);
}

static __always_inline __u16 feat_csum_fold(__s64 sum)
{
    __u32 c = (__u32)sum;
    c = (c & 0xffff) + (c >> 16);
    c = (c & 0xffff) + (c >> 16);
    return (__u16)~c;
}

static __always_inline void feat_ip_header(struct iphdr *ip, __be32 saddr, __be32 daddr, __u8 proto,
                                           __u16 len)
{
    __builtin_memset(ip, 0, sizeof(*ip));
    ip->version = 4;
    ip->ihl = 5;
    ip->tot_len = bpf_htons(len);
    ip->frag_off = bpf_htons(0x4000);
    ip->ttl = 64;
    ip->protocol = proto;
    ip->saddr = saddr;
    ip->daddr = daddr;
    ip->check = feat_csum_fold(bpf_csum_diff(0, 0, (void *)ip, sizeof(*ip), 0));
}

struct feat_rst {
    struct iphdr ip;
    struct tcphdr tcp;
};

struct feat_pseudo {
    __be32 saddr;
    __be32 daddr;
    __u8 zero;
    __u8 proto;
    __be16 len;
};

/* Answer a TCP segment with a RST from its destination (connection refused). */
static __always_inline int feat_reject_tcp(struct __sk_buff *skb, struct feat_tuple *t)
{
    struct tcphdr oth;
    struct feat_rst r;
    struct feat_pseudo ph;
    __u32 payload;
    __s64 sum;

    if (bpf_skb_load_bytes(skb, L4_OFF, &oth, sizeof(oth)) < 0)
        return TC_ACT_SHOT;
    if (oth.rst)
        return TC_ACT_SHOT;
    payload = t->tot_len - sizeof(struct iphdr) - oth.doff * 4;
    __builtin_memset(&r.tcp, 0, sizeof(r.tcp));
    r.tcp.source = oth.dest;
    r.tcp.dest = oth.source;
    r.tcp.doff = 5;
    r.tcp.rst = 1;
    if (oth.ack) {
        r.tcp.seq = oth.ack_seq;
    } else {
        r.tcp.ack = 1;
        r.tcp.ack_seq = bpf_htonl(bpf_ntohl(oth.seq) + payload + oth.syn + oth.fin);
    }
    ph.saddr = t->daddr;
    ph.daddr = t->saddr;
    ph.zero = 0;
    ph.proto = IPPROTO_TCP;
    ph.len = bpf_htons(sizeof(r.tcp));
    sum = bpf_csum_diff(0, 0, (void *)&ph, sizeof(ph), 0);
    sum = bpf_csum_diff(0, 0, (void *)&r.tcp, sizeof(r.tcp), sum);
    r.tcp.check = feat_csum_fold(sum);
    feat_ip_header(&r.ip, t->daddr, t->saddr, IPPROTO_TCP, sizeof(r));
    return feat_bounce(skb, &r, sizeof(r));
}

struct feat_icmp_unreach {
    struct iphdr ip;
    __u8 type;
    __u8 code;
    __u16 check;
    __u32 unused;
    struct iphdr orig;
    __u8 orig_l4[8];
};

/* Answer a datagram with ICMP port unreachable from its destination. */
static __always_inline int feat_reject_icmp(struct __sk_buff *skb, struct feat_tuple *t)
{
    struct feat_icmp_unreach m;

    if (bpf_skb_load_bytes(skb, ETH_HLEN, &m.orig, sizeof(m.orig)) < 0)
        return TC_ACT_SHOT;
    if (bpf_skb_load_bytes(skb, L4_OFF, m.orig_l4, sizeof(m.orig_l4)) < 0)
        return TC_ACT_SHOT;
    m.type = ICMP_DEST_UNREACH;
    m.code = ICMP_PORT_UNREACH;
    m.check = 0;
    m.unused = 0;
    m.check = feat_csum_fold(bpf_csum_diff(0, 0, (void *)&m.type,
                                           sizeof(m) - sizeof(struct iphdr), 0));
    feat_ip_header(&m.ip, t->daddr, t->saddr, IPPROTO_ICMP, sizeof(m));
    return feat_bounce(skb, &m, sizeof(m));
}

#endif
