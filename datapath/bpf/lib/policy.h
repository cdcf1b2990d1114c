/* NetworkPolicy enforcement: ipcache (address -> identity, LPM), per-endpoint
 * policy (identity, direction, protocol, port range as LPM prefix), policy
 * conntrack so replies of allowed connections pass, per-endpoint deny counters.
 * IPv4 (pol_*) and IPv6 (pol6_*, programs of their own tail-called for IPv6
 * packets): each family has its own ipcache, endpoint and conntrack map; identities, rules and deny counters are shared (a dual-stack pod is
 * one policy endpoint, its two addresses two identities of the same labels).
 */
#ifndef STICKYIP_POLICY_H
#define STICKYIP_POLICY_H

#include "feat_maps.h"
#include "feat_pkt.h"
#include "feat_pkt6.h"

static __always_inline __u32 pol_identity(__be32 addr)
{
    struct ipc_key k = {.prefixlen = 32, .addr = addr};
    struct ipc_val *v = stickyip_ipcach.lookup(&k);
    return v ? v->identity : ID_WORLD;
}

static __always_inline int pol_lookup(__u32 ep_id, __u32 identity, __u8 dir, __u8 proto,
                                      __be16 port)
{
    struct pol_key k = {.prefixlen = 96, .ep_id = ep_id, .identity = identity, .dir = dir,
                        .proto = proto, .port = port};

    if (stickyip_pol.lookup(&k))
        return 1;
    k.proto = 0;
    k.port = 0;
    if (stickyip_pol.lookup(&k))
        return 1;
    k.identity = ID_ANY;
    if (stickyip_pol.lookup(&k))
        return 1;
    k.proto = proto;
    k.port = port;
    return stickyip_pol.lookup(&k) != 0;
}

/* Is this packet a reply of a connection already allowed? */
static __always_inline int pol_is_reply(struct feat_tuple *t, __u8 dir)
{
    struct pol_ct_key rk = {.saddr = t->daddr, .daddr = t->saddr, .sport = t->dport,
                            .dport = t->sport, .proto = t->proto};
    struct lb_ct_key lk = {};
    struct lb_ct_val *lv;

    if (stickyip_polct.lookup(&rk))
        return 1;
    if (dir != POL_DIR_INGRESS)
        return 0;
    /* A reply that the service program already reverse-translated: find the
     * backend it really came from through the service conntrack. */
    lk.saddr = t->daddr;
    lk.daddr = t->saddr;
    lk.sport = t->dport;
    lk.dport = t->sport;
    lk.proto = t->proto;
    lk.dir = CT_DIR_FWD;
    lv = stickyip_lbct.lookup(&lk);
    if (!lv)
        return 0;
    if (lv->flags & CT_F_HAIRPIN)
        return 1;
    rk.saddr = t->daddr;
    rk.daddr = lv->addr;
    rk.sport = t->dport;
    rk.dport = lv->port;
    return stickyip_polct.lookup(&rk) != 0;
}

static __always_inline int pol_deny(__u32 ep_id, __u8 dir)
{
    struct pol_deny_key dk = {.ep_id = ep_id, .dir = dir};
    struct pol_deny_val zero = {};
    struct pol_deny_val *dv = stickyip_deny.lookup_or_try_init(&dk, &zero);
    if (dv)
        __sync_fetch_and_add(&dv->packets, 1);
    return TC_ACT_SHOT;
}

static __always_inline int pol_enforce(struct __sk_buff *skb, __u8 dir)
{
    struct feat_tuple t;
    struct pol_ep_key ek = {};
    struct pol_ep_val *ep;
    struct pol_ct_key ck = {};
    struct pol_ct_val cv = {};
    __be32 peer;
    __u32 identity;
    __u32 enforced = dir == POL_DIR_INGRESS ? EP_F_INGRESS_ENFORCED : EP_F_EGRESS_ENFORCED;

    if (feat_parse(skb, &t) < 0)
        return TC_ACT_UNSPEC;
    if (pol_is_reply(&t, dir))
        return TC_ACT_UNSPEC;
    ek.addr = dir == POL_DIR_INGRESS ? t.daddr : t.saddr;
    peer = dir == POL_DIR_INGRESS ? t.saddr : t.daddr;
    ep = stickyip_polep.lookup(&ek);
    if (ep && (ep->flags & enforced) && peer != ek.addr) {
        identity = pol_identity(peer);
        if (identity != ID_HOST &&
            !pol_lookup(ep->ep_id, identity, dir, t.proto, t.dport))
            return pol_deny(ep->ep_id, dir);
    }
    ck.saddr = t.saddr;
    ck.daddr = t.daddr;
    ck.sport = t.sport;
    ck.dport = t.dport;
    ck.proto = t.proto;
    if (!stickyip_polct.lookup(&ck)) {
        cv.last_ns = bpf_ktime_get_ns();
        stickyip_polct.update(&ck, &cv);
    }
    return TC_ACT_UNSPEC;
}

/* ------------------------------------------------------------------ IPv6 */

static __always_inline __u32 pol6_identity(const __be32 *addr)
{
    struct ipc6_key k = {.prefixlen = 128};
    struct ipc_val *v;

    feat_addr6_copy(k.addr, addr);
    v = stickyip_ipc6.lookup(&k);
    return v ? v->identity : ID_WORLD6;
}

static __always_inline int pol6_is_reply(struct feat_tuple6 *t, __u8 dir)
{
    struct pol_ct6_key rk = {.sport = t->dport, .dport = t->sport, .proto = t->proto};
    struct lb_ct6_key lk = {};
    struct lb_ct6_val *lv;

    feat_addr6_copy(rk.saddr, t->daddr);
    feat_addr6_copy(rk.daddr, t->saddr);
    if (stickyip_polct6.lookup(&rk))
        return 1;
    if (dir != POL_DIR_INGRESS)
        return 0;
    feat_addr6_copy(lk.saddr, t->daddr);
    feat_addr6_copy(lk.daddr, t->saddr);
    lk.sport = t->dport;
    lk.dport = t->sport;
    lk.proto = t->proto;
    lk.dir = CT_DIR_FWD;
    lv = stickyip_lbct6.lookup(&lk);
    if (!lv)
        return 0;
    if (lv->flags & CT_F_HAIRPIN)
        return 1;
    feat_addr6_copy(rk.daddr, lv->addr);
    rk.dport = lv->port;
    return stickyip_polct6.lookup(&rk) != 0;
}

static __always_inline int pol6_enforce(struct __sk_buff *skb, __u8 dir)
{
    struct feat_tuple6 t;
    struct pol_ep6_key ek = {};
    struct pol_ep_val *ep;
    struct pol_ct6_key ck = {};
    struct pol_ct_val cv = {};
    __be32 *peer;
    __u32 identity;
    __u32 enforced = dir == POL_DIR_INGRESS ? EP_F_INGRESS_ENFORCED : EP_F_EGRESS_ENFORCED;

    if (feat_parse6(skb, &t) < 0)
        return TC_ACT_UNSPEC;
    if (feat_is_nd(&t))
        return TC_ACT_UNSPEC;
    if (pol6_is_reply(&t, dir))
        return TC_ACT_UNSPEC;
    if (dir == POL_DIR_INGRESS) {
        feat_addr6_copy(ek.addr, t.daddr);
        peer = t.saddr;
    } else {
        feat_addr6_copy(ek.addr, t.saddr);
        peer = t.daddr;
    }
    ep = stickyip_polep6.lookup(&ek);
    if (ep && (ep->flags & enforced) && !feat_addr6_eq(peer, ek.addr)) {
        identity = pol6_identity(peer);
        if (identity != ID_HOST && !pol_lookup(ep->ep_id, identity, dir, t.proto, t.dport))
            return pol_deny(ep->ep_id, dir);
    }
    feat_addr6_copy(ck.saddr, t.saddr);
    feat_addr6_copy(ck.daddr, t.daddr);
    ck.sport = t.sport;
    ck.dport = t.dport;
    ck.proto = t.proto;
    if (!stickyip_polct6.lookup(&ck)) {
        cv.last_ns = bpf_ktime_get_ns();
        stickyip_polct6.update(&ck, &cv);
    }
    return TC_ACT_UNSPEC;
}

#endif
