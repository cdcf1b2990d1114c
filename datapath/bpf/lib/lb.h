/* Service load balancing: frontend lookup, backend choice (random or Maglev),
 * ClientIP affinity, conntrack so a flow keeps its backend, DNAT towards the
 * backend, reverse NAT of replies, hairpin SNAT, and rejecting services that
 * have no ready backend.
 */
#ifndef STICKYIP_LB_H
#define STICKYIP_LB_H

#include "feat_maps.h"
#include "feat_pkt.h"

static __always_inline __u32 lb_mix(__u32 a, __u32 b, __u32 c)
{
    /* Bob Jenkins' final mix (as jhash_3words) */
    c ^= b; c -= (b << 14) | (b >> 18);
    a ^= c; a -= (c << 11) | (c >> 21);
    b ^= a; b -= (a << 25) | (a >> 7);
    c ^= b; c -= (b << 16) | (b >> 16);
    a ^= c; a -= (c << 4) | (c >> 28);
    b ^= a; b -= (a << 14) | (a >> 18);
    c ^= b; c -= (b << 24) | (b >> 8);
    return c;
}

static __always_inline __u32 lb_select(struct lb_svc_val *svc, struct feat_tuple *t)
{
    struct lb_slot_key sk = {.svc_id = svc->svc_id};
    struct lb_slot_val *sv;

    if (svc->flags & SVC_F_MAGLEV) {
        __u32 h = lb_mix(t->saddr, t->daddr,
                         ((__u32)t->sport << 16 | t->dport) ^ t->proto);
        sk.slot = h % LB_MAGLEV_M;
        sv = stickyip_maglev.lookup(&sk);
    } else {
        sk.slot = 1 + bpf_get_prandom_u32() % svc->count;
        sv = stickyip_slot.lookup(&sk);
    }
    return sv ? sv->backend_id : 0;
}

static __always_inline __u32 lb_choose(struct lb_svc_val *svc, struct feat_tuple *t)
{
    struct lb_affinity_key ak = {.client = t->saddr, .svc_id = svc->svc_id};
    struct lb_affinity_val av = {};
    struct lb_affinity_val *cur;
    __u64 now = bpf_ktime_get_ns();
    __u32 bid;

    if (svc->flags & SVC_F_AFFINITY) {
        cur = stickyip_affin.lookup(&ak);
        if (cur && now - cur->last_ns < (__u64)svc->affinity_timeout_s * 1000000000ULL) {
            struct lb_backend_key bk = {.backend_id = cur->backend_id};
            if (stickyip_bkend.lookup(&bk)) {
                cur->last_ns = now;
                return cur->backend_id;
            }
        }
    }
    bid = lb_select(svc, t);
    if (bid && (svc->flags & SVC_F_AFFINITY)) {
        av.backend_id = bid;
        av.last_ns = now;
        stickyip_affin.update(&ak, &av);
    }
    return bid;
}

/* Reply of a hairpinned flow: the pod answered the hairpin address; restore
 * the service as source and the pod itself as destination, send it back. */
static __always_inline int lb_hairpin_reply(struct __sk_buff *skb, struct feat_tuple *t)
{
    struct lb_ct_key rk = {.saddr = t->saddr, .daddr = t->daddr, .sport = t->sport,
                           .dport = t->dport, .proto = t->proto, .dir = CT_DIR_REV};
    struct lb_ct_val *rv = stickyip_lbct.lookup(&rk);
    __be32 vip, client;
    __be16 vport;

    if (!rv)
        return TC_ACT_UNSPEC;
    vip = rv->addr;
    vport = rv->port;
    client = rv->client;
    feat_nat_addr(skb, IP_SRC_OFF, t->saddr, vip, t->proto);
    feat_nat_port(skb, L4_SPORT_OFF, t->sport, vport, t->proto);
    feat_nat_addr(skb, IP_DST_OFF, t->daddr, client, t->proto);
    if (feat_swap_eth(skb) < 0)
        return TC_ACT_SHOT;
    return bpf_redirect(skb->ifindex, 0);
}

/* Packets from a pod: translate service frontends to a backend. */
static __always_inline int lb_from_pod(struct __sk_buff *skb)
{
    struct feat_tuple t;
    struct lb_svc_key sk = {};
    struct lb_svc_val *svc;
    struct lb_ct_key fk = {}, rk = {};
    struct lb_ct_val *ct, *rv, nct = {}, rct = {};
    struct lb_backend_key bk = {};
    struct lb_backend_val *be = 0;
    __be32 baddr, new_saddr;
    __be16 bport;
    int hairpin;

    if (feat_parse(skb, &t) < 0 || !t.natable)
        return TC_ACT_UNSPEC;
    if (t.proto != IPPROTO_TCP && t.proto != IPPROTO_UDP && t.proto != IPPROTO_SCTP)
        return TC_ACT_UNSPEC;
    if (t.daddr == HAIRPIN_ADDR)
        return lb_hairpin_reply(skb, &t);
    sk.addr = t.daddr;
    sk.port = t.dport;
    sk.proto = t.proto;
    svc = stickyip_svc.lookup(&sk);
    if (!svc)
        return TC_ACT_UNSPEC;
    if (svc->count == 0) {
        if (t.proto == IPPROTO_TCP)
            return feat_reject_tcp(skb, &t);
        return feat_reject_icmp(skb, &t);
    }
    fk.saddr = t.saddr;
    fk.daddr = t.daddr;
    fk.sport = t.sport;
    fk.dport = t.dport;
    fk.proto = t.proto;
    fk.dir = CT_DIR_FWD;
    ct = stickyip_lbct.lookup(&fk);
    if (ct && ct->svc_id == svc->svc_id) {
        bk.backend_id = ct->backend_id;
        be = stickyip_bkend.lookup(&bk);
    }
    if (!be) {
        bk.backend_id = lb_choose(svc, &t);
        be = stickyip_bkend.lookup(&bk);
        if (!be)
            return TC_ACT_SHOT;  /* maps mid-update: drop, the client retransmits */
        nct.backend_id = bk.backend_id;
        nct.svc_id = svc->svc_id;
        nct.addr = be->addr;
        nct.port = be->port;
        nct.flags = be->addr == t.saddr ? CT_F_HAIRPIN : 0;
        stickyip_lbct.update(&fk, &nct);
    }
    baddr = be->addr;
    bport = be->port;
    hairpin = baddr == t.saddr;
    new_saddr = hairpin ? HAIRPIN_ADDR : t.saddr;
    rk.saddr = baddr;
    rk.daddr = new_saddr;
    rk.sport = bport;
    rk.dport = t.sport;
    rk.proto = t.proto;
    rk.dir = CT_DIR_REV;
    /* The reverse key (backend -> client port) is shared by every service that has
     * this backend: a client reusing a source port for another service must take
     * the reverse entry over, or its replies would come from the wrong VIP. */
    rv = stickyip_lbct.lookup(&rk);
    if (!rv || rv->addr != t.daddr || rv->port != t.dport || rv->client != t.saddr) {
        rct.backend_id = bk.backend_id;
        rct.svc_id = svc->svc_id;
        rct.addr = t.daddr;
        rct.port = t.dport;
        rct.flags = hairpin ? CT_F_HAIRPIN : 0;
        rct.client = t.saddr;
        stickyip_lbct.update(&rk, &rct);
    }
    feat_nat_addr(skb, IP_DST_OFF, t.daddr, baddr, t.proto);
    feat_nat_port(skb, L4_DPORT_OFF, t.dport, bport, t.proto);
    if (hairpin) {
        feat_nat_addr(skb, IP_SRC_OFF, t.saddr, HAIRPIN_ADDR, t.proto);
        if (feat_swap_eth(skb) < 0)
            return TC_ACT_SHOT;
        return bpf_redirect(skb->ifindex, 0);
    }
    return TC_ACT_UNSPEC;
}

/* Packets to a pod: replies from a backend get the service as their source. */
static __always_inline int lb_to_pod(struct __sk_buff *skb)
{
    struct feat_tuple t;
    struct lb_ct_key rk = {};
    struct lb_ct_val *rv;
    __be32 vip;
    __be16 vport;

    if (feat_parse(skb, &t) < 0 || !t.natable)
        return TC_ACT_UNSPEC;
    rk.saddr = t.saddr;
    rk.daddr = t.daddr;
    rk.sport = t.sport;
    rk.dport = t.dport;
    rk.proto = t.proto;
    rk.dir = CT_DIR_REV;
    rv = stickyip_lbct.lookup(&rk);
    if (!rv)
        return TC_ACT_UNSPEC;
    vip = rv->addr;
    vport = rv->port;
    feat_nat_addr(skb, IP_SRC_OFF, t.saddr, vip, t.proto);
    feat_nat_port(skb, L4_SPORT_OFF, t.sport, vport, t.proto);
    return TC_ACT_UNSPEC;
}

#endif
