/* NetworkPolicy on the host side of a pod's veth (tc clsact, prio 20).
 * lxc_pol_from_pod: tc ingress (packets from the pod) - the pod's egress policy.
 * lxc_pol_to_pod:   tc egress (packets to the pod)    - the pod's ingress policy.
 */
#include "lib/policy.h"

int lxc_pol_from_pod(struct __sk_buff *skb)
{
    return pol_enforce(skb, POL_DIR_EGRESS);
}

int lxc_pol_to_pod(struct __sk_buff *skb)
{
    return pol_enforce(skb, POL_DIR_INGRESS);
}
