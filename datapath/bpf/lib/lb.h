/* Service load balancing: frontend lookup, backend choice (random or Maglev),
 * ClientIP affinity, conntrack so a flow keeps its backend, DNAT towards the
 * backend, reverse NAT of replies, hairpin SNAT, and rejecting services that
 * have no ready backend. IPv4 (lb4_*) and IPv6 (lb6_*) with the same steps, each
 * family on its own frontend, backend, conntrack and affinity maps. The IPv6 path
 * runs as programs of its own, tail-called by the IPv4 ones for IPv6 packets (one
 * program holding both would exceed the 512-byte BPF stack).
 */
#ifndef STICKYIP_LB_H
#define STICKYIP_LB_H

#include "feat_maps.h"
#include "feat_pkt.h"
#include "feat_pkt6.h"

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

/* Backend id of a new flow: Maglev by the flow hash, or random over the slots. */
static __always_inline __u32 lb_pick(struct lb_svc_val *svc, __u32 saddr, __u32 daddr,
                                     __be16 sport, __be16 dport, __u8 proto)
{
    struct lb_slot_key sk = {.svc_id = svc->svc_id};
    struct lb_slot_val *sv;

    if (svc->flags & SVC_F_MAGLEV) {
        __u32 h = lb_mix(saddr, daddr, ((__u32)sport << 16 | dport) ^ proto);
        sk.slot = h % LB_MAGLEV_M;
        sv = stickyip_maglev.lookup(&sk);
    } else {
        sk.slot = 1 + bpf_get_prandom_u32() % svc->count;
        sv = stickyip_slot.lookup(&sk);
    }
    return sv ? sv->backend_id : 0;
}

static __always_inline __u32 lb_select(struct lb_svc_val *svc, struct feat_tuple *t)
{
    return lb_pick(svc, t->saddr, t->daddr, t->sport, t->dport, t->proto);
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

/* A new TCP connection that no service translates (a pod reaching another pod's
 * address directly) must not have its replies rewritten by the reverse entry of an
 * older service flow that used the same ports (the client's kernel reuses source
 * ports): on its SYN, that stale entry goes. */
static __always_inline int lb_is_syn(struct __sk_buff *skb, int l4_off, __u8 proto)
{
    __u8 flags = 0;

    if (proto != IPPROTO_TCP || bpf_skb_load_bytes(skb, l4_off + 13, &flags, 1) < 0)
        return 0;
    return (flags & 0x12) == 0x02;  /* SYN without ACK */
}

static __always_inline void lb_forget_reverse(struct __sk_buff *skb, struct feat_tuple *t)
{
    struct lb_ct_key rk = {.saddr = t->daddr, .daddr = t->saddr, .sport = t->dport,
                           .dport = t->sport, .proto = t->proto, .dir = CT_DIR_REV};

    if (lb_is_syn(skb, L4_OFF, t->proto))
        stickyip_lbct.delete(&rk);
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
    if (!svc) {
        lb_forget_reverse(skb, &t);
        return TC_ACT_UNSPEC;
    }
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

/* ------------------------------------------------------------------ IPv6 */

static __always_inline __u32 lb6_fold(const __be32 *a)
{
    return a[0] ^ a[1] ^ a[2] ^ a[3];
}

static __always_inline __u32 lb6_choose(struct lb_svc_val *svc, struct feat_tuple6 *t)
{
    struct lb_affinity6_key ak = {.svc_id = svc->svc_id};
    struct lb_affinity_val av = {};
    struct lb_affinity_val *cur;
    __u64 now = bpf_ktime_get_ns();
    __u32 bid;

    feat_addr6_copy(ak.client, t->saddr);
    if (svc->flags & SVC_F_AFFINITY) {
        cur = stickyip_affin6.lookup(&ak);
        if (cur && now - cur->last_ns < (__u64)svc->affinity_timeout_s * 1000000000ULL) {
            struct lb_backend_key bk = {.backend_id = cur->backend_id};
            if (stickyip_bkend6.lookup(&bk)) {
                cur->last_ns = now;
                return cur->backend_id;
            }
        }
    }
    bid = lb_pick(svc, lb6_fold(t->saddr), lb6_fold(t->daddr), t->sport, t->dport, t->proto);
    if (bid && (svc->flags & SVC_F_AFFINITY)) {
        av.backend_id = bid;
        av.last_ns = now;
        stickyip_affin6.update(&ak, &av);
    }
    return bid;
}

static __always_inline int lb6_is_hairpin(const __be32 *a)
{
    return a[0] == HAIRPIN6_W0 && a[1] == HAIRPIN6_W1 && a[2] == HAIRPIN6_W2 &&
           a[3] == HAIRPIN6_W3;
}

static __always_inline void lb6_hairpin_addr(__be32 *a)
{
    a[0] = HAIRPIN6_W0;
    a[1] = HAIRPIN6_W1;
    a[2] = HAIRPIN6_W2;
    a[3] = HAIRPIN6_W3;
}

static __always_inline int lb6_hairpin_reply(struct __sk_buff *skb, struct feat_tuple6 *t)
{
    struct lb_ct6_key rk = {.sport = t->sport, .dport = t->dport, .proto = t->proto,
                            .dir = CT_DIR_REV};
    struct lb_ct6_val *rv;
    __be32 vip[4], client[4];
    __be16 vport;

    feat_addr6_copy(rk.saddr, t->saddr);
    feat_addr6_copy(rk.daddr, t->daddr);
    rv = stickyip_lbct6.lookup(&rk);
    if (!rv)
        return TC_ACT_UNSPEC;
    feat_addr6_copy(vip, rv->addr);
    feat_addr6_copy(client, rv->client);
    vport = rv->port;
    feat_nat_addr6(skb, IP6_SRC_OFF, t->saddr, vip, t->proto);
    feat_nat_port6(skb, L4_6_SPORT_OFF, t->sport, vport, t->proto);
    feat_nat_addr6(skb, IP6_DST_OFF, t->daddr, client, t->proto);
    if (feat_swap_eth(skb) < 0)
        return TC_ACT_SHOT;
    return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int lb6_from_pod(struct __sk_buff *skb)
{
    struct feat_tuple6 t;
    struct lb_svc6_key sk = {};
    struct lb_svc_val *svc;
    /* one key and one value, used first for the forward entry, then the reverse one
     * (two of each would not fit the stack beside the IPv6 tuple) */
    struct lb_ct6_key k = {};
    struct lb_ct6_val *ct, *rv, v = {};
    struct lb_backend_key bk = {};
    struct lb_backend6_val *be = 0;
    __be32 baddr[4], new_saddr[4];
    __be16 bport;
    int hairpin;

    if (feat_parse6(skb, &t) < 0 || !t.natable)
        return TC_ACT_UNSPEC;
    if (t.proto != IPPROTO_TCP && t.proto != IPPROTO_UDP && t.proto != IPPROTO_SCTP)
        return TC_ACT_UNSPEC;
    if (lb6_is_hairpin(t.daddr))
        return lb6_hairpin_reply(skb, &t);
    feat_addr6_copy(sk.addr, t.daddr);
    sk.port = t.dport;
    sk.proto = t.proto;
    svc = stickyip_svc6.lookup(&sk);
    if (!svc) {
        /* as lb_forget_reverse, for IPv6 */
        if (lb_is_syn(skb, L4_6_OFF, t.proto)) {
            struct lb_ct6_key rk = {.sport = t.dport, .dport = t.sport, .proto = t.proto,
                                    .dir = CT_DIR_REV};
            feat_addr6_copy(rk.saddr, t.daddr);
            feat_addr6_copy(rk.daddr, t.saddr);
            stickyip_lbct6.delete(&rk);
        }
        return TC_ACT_UNSPEC;
    }
    if (svc->count == 0) {
        if (t.proto == IPPROTO_TCP)
            return feat_reject_tcp6(skb, &t);
        return feat_reject_icmp6(skb, &t);
    }
    feat_addr6_copy(k.saddr, t.saddr);
    feat_addr6_copy(k.daddr, t.daddr);
    k.sport = t.sport;
    k.dport = t.dport;
    k.proto = t.proto;
    k.dir = CT_DIR_FWD;
    ct = stickyip_lbct6.lookup(&k);
    if (ct && ct->svc_id == svc->svc_id) {
        bk.backend_id = ct->backend_id;
        be = stickyip_bkend6.lookup(&bk);
    }
    if (!be) {
        bk.backend_id = lb6_choose(svc, &t);
        be = stickyip_bkend6.lookup(&bk);
        if (!be)
            return TC_ACT_SHOT;  /* maps mid-update: drop, the client retransmits */
        v.backend_id = bk.backend_id;
        v.svc_id = svc->svc_id;
        feat_addr6_copy(v.addr, be->addr);
        v.port = be->port;
        v.flags = feat_addr6_eq(be->addr, t.saddr) ? CT_F_HAIRPIN : 0;
        stickyip_lbct6.update(&k, &v);
    }
    feat_addr6_copy(baddr, be->addr);
    bport = be->port;
    hairpin = feat_addr6_eq(baddr, t.saddr);
    if (hairpin)
        lb6_hairpin_addr(new_saddr);
    else
        feat_addr6_copy(new_saddr, t.saddr);
    feat_addr6_copy(k.saddr, baddr);
    feat_addr6_copy(k.daddr, new_saddr);
    k.sport = bport;
    k.dport = t.sport;
    k.proto = t.proto;
    k.dir = CT_DIR_REV;
    /* As for IPv4: a client reusing a source port for another service sharing the
     * backend takes the reverse entry over. */
    rv = stickyip_lbct6.lookup(&k);
    if (!rv || !feat_addr6_eq(rv->addr, t.daddr) || rv->port != t.dport ||
        !feat_addr6_eq(rv->client, t.saddr)) {
        v.backend_id = bk.backend_id;
        v.svc_id = svc->svc_id;
        feat_addr6_copy(v.addr, t.daddr);
        v.port = t.dport;
        v.flags = hairpin ? CT_F_HAIRPIN : 0;
        feat_addr6_copy(v.client, t.saddr);
        stickyip_lbct6.update(&k, &v);
    }
    feat_nat_addr6(skb, IP6_DST_OFF, t.daddr, baddr, t.proto);
    feat_nat_port6(skb, L4_6_DPORT_OFF, t.dport, bport, t.proto);
    if (hairpin) {
        feat_nat_addr6(skb, IP6_SRC_OFF, t.saddr, new_saddr, t.proto);
        if (feat_swap_eth(skb) < 0)
            return TC_ACT_SHOT;
        return bpf_redirect(skb->ifindex, 0);
    }
    return TC_ACT_UNSPEC;
}

static __always_inline int lb6_to_pod(struct __sk_buff *skb)
{
    struct feat_tuple6 t;
    struct lb_ct6_key rk = {};
    struct lb_ct6_val *rv;
    __be32 vip[4];
    __be16 vport;

    if (feat_parse6(skb, &t) < 0 || !t.natable)
        return TC_ACT_UNSPEC;
    feat_addr6_copy(rk.saddr, t.saddr);
    feat_addr6_copy(rk.daddr, t.daddr);
    rk.sport = t.sport;
    rk.dport = t.dport;
    rk.proto = t.proto;
    rk.dir = CT_DIR_REV;
    rv = stickyip_lbct6.lookup(&rk);
    if (!rv)
        return TC_ACT_UNSPEC;
    feat_addr6_copy(vip, rv->addr);
    vport = rv->port;
    feat_nat_addr6(skb, IP6_SRC_OFF, t.saddr, vip, t.proto);
    feat_nat_port6(skb, L4_6_SPORT_OFF, t.sport, vport, t.proto);
    return TC_ACT_UNSPEC;
}

#endif
