/* tc clsact ingress on the host side of a pod veth (packets FROM the pod), prio 1.
 * A pod may send IPv4 only from its own IPv4 address and ARP only for it, IPv6 only
 * from its own IPv6 address, plus the ICMPv6 a pod's kernel sends from its link-local
 * (or the unspecified) address to run IPv6 on its link: router and neighbour
 * solicitations, neighbour advertisements and MLD. Anything else is dropped and
 * counted per endpoint. Legitimate packets return TC_ACT_UNSPEC so the filters at
 * later priorities (service LB, policy) still run. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/if_arp.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in6.h>
#include <uapi/linux/pkt_cls.h>

#include "lib/endpoint.h"

#define NEXTHDR_HOP 0
#define NEXTHDR_ICMP6 58

enum drop_kind { DROP_SPOOFED, DROP_FENCED, DROP_OTHER };

static __always_inline int drop(u32 ifindex, enum drop_kind kind, u32 len)
{
    struct stickyip_ep_counters zero = {};
    struct stickyip_ep_counters *c = stickyip_ep_counters.lookup_or_try_init(&ifindex, &zero);
    if (c) {
        if (kind == DROP_SPOOFED) {
            __sync_fetch_and_add(&c->spoofed_packets, 1);
            __sync_fetch_and_add(&c->spoofed_bytes, len);
        } else if (kind == DROP_FENCED) {
            __sync_fetch_and_add(&c->fenced_packets, 1);
        } else {
            __sync_fetch_and_add(&c->other_packets, 1);
        }
    }
    return TC_ACT_SHOT;
}

/* ICMPv6 a pod needs on its link, sent from fe80::/10 or ::. Router advertisements
 * and redirects are not among them: a pod is no router. */
static __always_inline int link_icmp6(struct ipv6hdr *ip6, void *end)
{
    u32 w0 = ip6->saddr.in6_u.u6_addr32[0];
    int unspecified = (w0 | ip6->saddr.in6_u.u6_addr32[1] | ip6->saddr.in6_u.u6_addr32[2]
                       | ip6->saddr.in6_u.u6_addr32[3]) == 0;
    int link_local = (bpf_ntohl(w0) & 0xffc00000) == 0xfe800000;
    u8 *l4 = (u8 *)(ip6 + 1);
    u8 next = ip6->nexthdr;

    if (!unspecified && !link_local)
        return 0;
    if (next == NEXTHDR_HOP) {  /* MLD reports carry a router alert option */
        if ((void *)(l4 + 2) > end)
            return 0;
        next = l4[0];
        l4 += (l4[1] + 1) * 8;
    }
    if (next != NEXTHDR_ICMP6 || (void *)(l4 + 1) > end)
        return 0;
    switch (l4[0]) {
    case 130: case 131: case 132: case 143:  /* MLD query, report, done; MLDv2 report */
    case 133:                                /* router solicitation */
    case 135: case 136:                      /* neighbour solicitation, advertisement */
        return 1;
    }
    return 0;
}

int antispoof_ingress(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    u32 ifindex = skb->ifindex;
    struct stickyip_endpoint *ep = stickyip_endpoints.lookup(&ifindex);
    /* Unknown endpoint: fail closed (the agent writes the map before attaching). */
    if (!ep)
        return drop(ifindex, DROP_OTHER, skb->len);
    if (ep->flags & STICKYIP_FLAG_FENCED)
        return drop(ifindex, DROP_FENCED, skb->len);

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return drop(ifindex, DROP_OTHER, skb->len);

    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end || !(ep->flags & STICKYIP_FLAG_V4))
            return drop(ifindex, DROP_OTHER, skb->len);
        if (ip->saddr == ep->addr)
            return TC_ACT_UNSPEC;
        return drop(ifindex, DROP_SPOOFED, skb->len);
    }
    if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
        /* Ethernet/IPv4 ARP: 8-byte header, sender MAC (6), sender IP (4). */
        struct arphdr *arp = (void *)(eth + 1);
        u8 *spa = (u8 *)(arp + 1) + ETH_ALEN;
        if ((void *)(spa + 4) > end || !(ep->flags & STICKYIP_FLAG_V4))
            return drop(ifindex, DROP_OTHER, skb->len);
        u32 sender = 0;
        __builtin_memcpy(&sender, spa, 4);
        if (sender == ep->addr || sender == 0)
            return TC_ACT_UNSPEC;
        return drop(ifindex, DROP_SPOOFED, skb->len);
    }
    if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end || !(ep->flags & STICKYIP_FLAG_V6))
            return drop(ifindex, DROP_OTHER, skb->len);
        if (ip6->saddr.in6_u.u6_addr32[0] == ep->addr6[0]
            && ip6->saddr.in6_u.u6_addr32[1] == ep->addr6[1]
            && ip6->saddr.in6_u.u6_addr32[2] == ep->addr6[2]
            && ip6->saddr.in6_u.u6_addr32[3] == ep->addr6[3])
            return TC_ACT_UNSPEC;
        if (link_icmp6(ip6, end))
            return TC_ACT_UNSPEC;
        return drop(ifindex, DROP_SPOOFED, skb->len);
    }
    /* Anything else (another ethertype, or a family the pod has no address of). */
    return drop(ifindex, DROP_OTHER, skb->len);
}
