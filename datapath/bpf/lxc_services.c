/* Service load balancing on the host side of a pod's veth (tc clsact, prio 10).
 * lxc_svc_from_pod: tc ingress (packets from the pod) - DNAT to a backend.
 * lxc_svc_to_pod:   tc egress (packets to the pod)    - reverse NAT of replies.
 * IPv6 packets continue in lxc_svc6_from_pod / lxc_svc6_to_pod (tail calls).
 */
#include "lib/lb.h"

int lxc_svc_from_pod(struct __sk_buff *skb)
{
    if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
        stickyip_v6prog.call(skb, V6_SVC_FROM_POD);
        return TC_ACT_UNSPEC;  /* not reached unless the loader left the slot empty */
    }
    return lb_from_pod(skb);
}

int lxc_svc_to_pod(struct __sk_buff *skb)
{
    if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
        stickyip_v6prog.call(skb, V6_SVC_TO_POD);
        return TC_ACT_UNSPEC;
    }
    return lb_to_pod(skb);
}

int lxc_svc6_from_pod(struct __sk_buff *skb)
{
    return lb6_from_pod(skb);
}

int lxc_svc6_to_pod(struct __sk_buff *skb)
{
    return lb6_to_pod(skb);
}
