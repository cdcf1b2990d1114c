/* Per-endpoint maps shared by the agent's tc programs. Keys are the host-side veth
 * ifindex. Layouts mirror datapath/maps/endpoints.py and ep_counters.py (a unit test compares them). */
#ifndef STICKYIP_ENDPOINT_H
#define STICKYIP_ENDPOINT_H

#ifndef PIN_ROOT
#error "PIN_ROOT must be defined (the bpffs directory of pinned maps)"
#endif

#define STICKYIP_FLAG_FENCED 1
#define STICKYIP_FLAG_V4 2  /* addr holds the pod's IPv4 address */
#define STICKYIP_FLAG_V6 4  /* addr6 holds the pod's IPv6 address */

struct stickyip_endpoint {
    u32 addr;       /* the pod's IPv4 address, network byte order */
    u32 flags;      /* STICKYIP_FLAG_* */
    __be32 addr6[4]; /* the pod's IPv6 address, network byte order */
};

struct stickyip_ep_counters {
    u64 spoofed_packets;
    u64 spoofed_bytes;
    u64 fenced_packets;
    u64 other_packets;
};

BPF_TABLE_PINNED("hash", u32, struct stickyip_endpoint, stickyip_endpoints, 16384,
                 PIN_ROOT "/stickyip_endpoints");
BPF_TABLE_PINNED("hash", u32, struct stickyip_ep_counters, stickyip_ep_counters, 16384,
                 PIN_ROOT "/stickyip_ep_counters");

#endif
