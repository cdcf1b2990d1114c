/* tc clsact ingress on the host side of a pod veth (packets FROM the pod), prio 1.
 * A pod may send IPv4 only from its own address and ARP only for it; anything else is
 * dropped and counted per endpoint. Legitimate packets return TC_ACT_UNSPEC so the
 * filters at later priorities (service LB, policy) still run. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/if_arp.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/pkt_cls.h>

#include "lib/endpoint.h"

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
        if ((void *)(ip + 1) > end)
            return drop(ifindex, DROP_OTHER, skb->len);
        if (ip->saddr == ep->addr)
            return TC_ACT_UNSPEC;
        return drop(ifindex, DROP_SPOOFED, skb->len);
    }
    if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
        /* Ethernet/IPv4 ARP: 8-byte header, sender MAC (6), sender IP (4). */
        struct arphdr *arp = (void *)(eth + 1);
        u8 *spa = (u8 *)(arp + 1) + ETH_ALEN;
        if ((void *)(spa + 4) > end)
            return drop(ifindex, DROP_OTHER, skb->len);
        u32 sender = 0;
        __builtin_memcpy(&sender, spa, 4);
        if (sender == ep->addr || sender == 0)
            return TC_ACT_UNSPEC;
        return drop(ifindex, DROP_SPOOFED, skb->len);
    }
    /* IPv6 and anything else: pods here are IPv4-only. */
    return drop(ifindex, DROP_OTHER, skb->len);
}
