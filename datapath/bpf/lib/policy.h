/* NetworkPolicy enforcement: ipcache (address -> identity, LPM), per-endpoint
 * policy (identity, direction, protocol, port range as LPM prefix), policy
 * conntrack so replies of allowed connections pass, per-endpoint deny counters.
 */
#ifndef STICKYIP_POLICY_H
#define STICKYIP_POLICY_H

#include "feat_maps.h"
#include "feat_pkt.h"

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
            !pol_lookup(ep->ep_id, identity, dir, t.proto, t.dport)) {
            struct pol_deny_key dk = {.ep_id = ep->ep_id, .dir = dir};
            struct pol_deny_val zero = {};
            struct pol_deny_val *dv = stickyip_deny.lookup_or_try_init(&dk, &zero);
            if (dv)
                __sync_fetch_and_add(&dv->packets, 1);
            return TC_ACT_SHOT;
        }
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

#endif
