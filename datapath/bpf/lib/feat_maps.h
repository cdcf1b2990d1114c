/* Maps and key/value layouts shared by the service (lxc_services.c) and policy
 * (lxc_policy.c) programs. The host-side mirror of every struct is in
 * one module per map in datapath/maps/ (a unit test compares them).
 *
 * Addresses and ports are kept in network byte order exactly as they sit in the
 * packet, so the programs never swap bytes on the fast path.
 *
 * IPv6 has its own maps beside the IPv4 ones wherever a key or value holds an address
 * (the *6 structs and maps, as Cilium keeps lb4_ and lb6_ maps): IPv4 keys stay as
 * small as they were, and each family's lookup stays one hash or LPM lookup. Maps
 * keyed by ids only (backend slots, Maglev, policy rules, deny counters) are shared.
 */
#ifndef STICKYIP_FEAT_MAPS_H
#define STICKYIP_FEAT_MAPS_H

#include <uapi/linux/bpf.h>

#ifndef PIN_DIR
#define PIN_DIR "/sys/fs/bpf/stickyip/features"
#endif
#define PIN(name) PIN_DIR "/" #name

#ifndef LB_MAX_SERVICES
#define LB_MAX_SERVICES 131072
#endif
#ifndef LB_MAX_BACKENDS
#define LB_MAX_BACKENDS 262144
#endif
#ifndef LB_MAGLEV_M
#define LB_MAGLEV_M 251
#endif
#ifndef LB_MAX_MAGLEV
#define LB_MAX_MAGLEV 262144
#endif
#ifndef CT_MAX
#define CT_MAX 262144
#endif
#ifndef POL_MAX
#define POL_MAX 131072
#endif
#ifndef IPC_MAX
#define IPC_MAX 131072
#endif
#ifndef HAIRPIN_ADDR
/* 169.254.42.1 in network byte order (little-endian host). */
#define HAIRPIN_ADDR 0x012afea9
#endif
/* fdff:ffff:ffff:ffff::2a01 (the last /64 of the ULA range), network byte order
 * (little-endian host), as four 32-bit words. */
#define HAIRPIN6_W0 0xfffffffd
#define HAIRPIN6_W1 0xffffffff
#define HAIRPIN6_W2 0x00000000
#define HAIRPIN6_W3 0x012a0000

/* service frontend flags */
#define SVC_F_AFFINITY 1
#define SVC_F_MAGLEV 2

/* lb conntrack directions */
#define CT_DIR_FWD 0
#define CT_DIR_REV 1

/* lb conntrack value flags */
#define CT_F_HAIRPIN 1

/* policy directions (pod's point of view) */
#define POL_DIR_INGRESS 1
#define POL_DIR_EGRESS 2

/* endpoint flags */
#define EP_F_INGRESS_ENFORCED 1
#define EP_F_EGRESS_ENFORCED 2

/* reserved identities */
#define ID_ANY 0
#define ID_HOST 1
#define ID_WORLD 2   /* IPv4 addresses no pod or ipBlock names */
#define ID_WORLD6 3  /* the same for IPv6 (Cilium's world-ipv4 and world-ipv6) */

struct lb_svc_key {
    __be32 addr;
    __be16 port;
    __u8 proto;
    __u8 pad;
};

struct lb_svc_val {
    __u32 svc_id;
    __u16 count;        /* ready backends; 0 = reject */
    __u16 flags;        /* SVC_F_* */
    __u32 affinity_timeout_s;
    __u32 pad;
};

struct lb_slot_key {
    __u32 svc_id;
    __u32 slot;         /* 1..count for random choice, 0..M-1 for Maglev */
};

struct lb_slot_val {
    __u32 backend_id;
};

struct lb_backend_key {
    __u32 backend_id;
};

struct lb_backend_val {
    __be32 addr;
    __be16 port;
    __u8 proto;
    __u8 pad;
};

struct lb_ct_key {
    __be32 saddr;
    __be32 daddr;
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 dir;           /* CT_DIR_* */
    __u16 pad;
};

struct lb_ct_val {
    __u32 backend_id;   /* forward: chosen backend */
    __u32 svc_id;
    __be32 addr;        /* forward: backend address; reverse: service address */
    __be16 port;        /* forward: backend port; reverse: service port */
    __u16 flags;        /* CT_F_* */
    __be32 client;      /* reverse: original client (hairpin un-SNAT) */
    __u32 pad;
};

struct lb_affinity_key {
    __be32 client;
    __u32 svc_id;
};

struct lb_affinity_val {
    __u32 backend_id;
    __u32 pad;
    __u64 last_ns;
};

struct ipc_key {
    __u32 prefixlen;
    __be32 addr;
};

struct ipc_val {
    __u32 identity;
};

struct pol_ep_key {
    __be32 addr;
};

struct pol_ep_val {
    __u32 ep_id;
    __u32 flags;        /* EP_F_* */
};

struct pol_key {
    __u32 prefixlen;    /* 80 + bits of port that must match */
    __u32 ep_id;
    __u32 identity;     /* ID_ANY: any peer */
    __u8 dir;           /* POL_DIR_* */
    __u8 proto;         /* 0: any protocol (and then any port) */
    __be16 port;
};

struct pol_val {
    __u32 rule_id;
    __u32 pad;
};

struct pol_ct_key {
    __be32 saddr;
    __be32 daddr;
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 pad1;
    __u16 pad2;
};

struct pol_ct_val {
    __u64 last_ns;
};

struct pol_deny_key {
    __u32 ep_id;
    __u32 dir;
};

struct pol_deny_val {
    __u64 packets;
};

/* IPv6 twins of the structs above that hold addresses. */

struct lb_svc6_key {
    __be32 addr[4];
    __be16 port;
    __u8 proto;
    __u8 pad;
};

struct lb_backend6_val {
    __be32 addr[4];
    __be16 port;
    __u8 proto;
    __u8 pad;
};

struct lb_ct6_key {
    __be32 saddr[4];
    __be32 daddr[4];
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 dir;           /* CT_DIR_* */
    __u16 pad;
};

struct lb_ct6_val {
    __u32 backend_id;
    __u32 svc_id;
    __be32 addr[4];     /* forward: backend address; reverse: service address */
    __be16 port;
    __u16 flags;        /* CT_F_* */
    __be32 client[4];   /* reverse: original client (hairpin un-SNAT) */
};

struct lb_affinity6_key {
    __be32 client[4];
    __u32 svc_id;
};

struct ipc6_key {
    __u32 prefixlen;
    __be32 addr[4];
};

struct pol_ep6_key {
    __be32 addr[4];
};

struct pol_ct6_key {
    __be32 saddr[4];
    __be32 daddr[4];
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 pad1;
    __u16 pad2;
};

BPF_TABLE_PINNED("hash", struct lb_svc_key, struct lb_svc_val, stickyip_svc,
                 LB_MAX_SERVICES, PIN(stickyip_svc));
BPF_TABLE_PINNED("hash", struct lb_slot_key, struct lb_slot_val, stickyip_slot,
                 LB_MAX_BACKENDS, PIN(stickyip_slot));
BPF_TABLE_PINNED("hash", struct lb_slot_key, struct lb_slot_val, stickyip_maglev,
                 LB_MAX_MAGLEV, PIN(stickyip_maglev));
BPF_TABLE_PINNED("hash", struct lb_backend_key, struct lb_backend_val, stickyip_bkend,
                 LB_MAX_BACKENDS, PIN(stickyip_bkend));
BPF_TABLE_PINNED("lru_hash", struct lb_ct_key, struct lb_ct_val, stickyip_lbct,
                 CT_MAX, PIN(stickyip_lbct));
BPF_TABLE_PINNED("lru_hash", struct lb_affinity_key, struct lb_affinity_val, stickyip_affin,
                 CT_MAX, PIN(stickyip_affin));
BPF_TABLE_PINNED7("lpm_trie", struct ipc_key, struct ipc_val, stickyip_ipcach,
                  IPC_MAX, PIN(stickyip_ipcach), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", struct pol_ep_key, struct pol_ep_val, stickyip_polep,
                 65536, PIN(stickyip_polep));
BPF_TABLE_PINNED7("lpm_trie", struct pol_key, struct pol_val, stickyip_pol,
                  POL_MAX, PIN(stickyip_pol), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lru_hash", struct pol_ct_key, struct pol_ct_val, stickyip_polct,
                 CT_MAX, PIN(stickyip_polct));
BPF_TABLE_PINNED("hash", struct pol_deny_key, struct pol_deny_val, stickyip_deny,
                 65536, PIN(stickyip_deny));

/* The IPv6 programs, tail-called by the IPv4 ones for IPv6 packets (each program has
 * its own 512-byte stack). Filled by the loader; not pinned: each loaded object has
 * its own, so a filter always reaches the IPv6 code of its own load. */
#define V6_SVC_FROM_POD 0
#define V6_SVC_TO_POD 1
#define V6_POL_FROM_POD 2
#define V6_POL_TO_POD 3
BPF_PROG_ARRAY(stickyip_v6prog, 4);

BPF_TABLE_PINNED("hash", struct lb_svc6_key, struct lb_svc_val, stickyip_svc6,
                 LB_MAX_SERVICES, PIN(stickyip_svc6));
BPF_TABLE_PINNED("hash", struct lb_backend_key, struct lb_backend6_val, stickyip_bkend6,
                 LB_MAX_BACKENDS, PIN(stickyip_bkend6));
BPF_TABLE_PINNED("lru_hash", struct lb_ct6_key, struct lb_ct6_val, stickyip_lbct6,
                 CT_MAX, PIN(stickyip_lbct6));
BPF_TABLE_PINNED("lru_hash", struct lb_affinity6_key, struct lb_affinity_val, stickyip_affin6,
                 CT_MAX, PIN(stickyip_affin6));
BPF_TABLE_PINNED7("lpm_trie", struct ipc6_key, struct ipc_val, stickyip_ipc6,
                  IPC_MAX, PIN(stickyip_ipc6), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", struct pol_ep6_key, struct pol_ep_val, stickyip_polep6,
                 65536, PIN(stickyip_polep6));
BPF_TABLE_PINNED("lru_hash", struct pol_ct6_key, struct pol_ct_val, stickyip_polct6,
                 CT_MAX, PIN(stickyip_polct6));

#endif
