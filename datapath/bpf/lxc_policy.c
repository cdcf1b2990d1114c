/* NetworkPolicy on the host side of a pod's veth (tc clsact, prio 20).
 * lxc_pol_from_pod: tc ingress (packets from the pod) - the pod's egress policy.
 * lxc_pol_to_pod:   tc egress (packets to the pod)    - the pod's ingress policy.
 * IPv6 packets continue in lxc_pol6_from_pod / lxc_pol6_to_pod (tail calls). If the
 * IPv6 program were missing the packet is dropped: policy fails closed.
 */
#include "lib/policy.h"

int lxc_pol_from_pod(struct __sk_buff *skb)
{
    if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
        stickyip_v6prog.call(skb, V6_POL_FROM_POD);
        return TC_ACT_SHOT;
    }
    return pol_enforce(skb, POL_DIR_EGRESS);
}

int lxc_pol_to_pod(struct __sk_buff *skb)
{
    if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
        stickyip_v6prog.call(skb, V6_POL_TO_POD);
        return TC_ACT_SHOT;
    }
    return pol_enforce(skb, POL_DIR_INGRESS);
}

int lxc_pol6_from_pod(struct __sk_buff *skb)
{
    return pol6_enforce(skb, POL_DIR_EGRESS);
}

int lxc_pol6_to_pod(struct __sk_buff *skb)
{
    return pol6_enforce(skb, POL_DIR_INGRESS);
}
