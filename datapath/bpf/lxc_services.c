/* Service load balancing on the host side of a pod's veth (tc clsact, prio 10).
 * lxc_svc_from_pod: tc ingress (packets from the pod) - DNAT to a backend.
 * lxc_svc_to_pod:   tc egress (packets to the pod)    - reverse NAT of replies.
 */
#include "lib/lb.h"

int lxc_svc_from_pod(struct __sk_buff *skb)
{
    return lb_from_pod(skb);
}

int lxc_svc_to_pod(struct __sk_buff *skb)
{
    return lb_to_pod(skb);
}
