"""The eBPF maps as the host sees them: one module per map (its name, key and value
layout, flags), the map state and writer interface (:mod:`.state`) and the byte-order
helpers (:mod:`.fields`). Pure: ctypes only; :mod:`datapath.loader` does the I/O.

A unit test checks every layout here against its C struct in ``datapath/bpf/lib/``.
"""

from __future__ import annotations

from datapath.maps import (
    endpoints,
    ep_counters,
    ipcache,
    lb_affinity,
    lb_backends,
    lb_conntrack,
    lb_maglev,
    lb_services,
    lb_slots,
    policy_conntrack,
    policy_denied,
    policy_endpoints,
    policy_rules,
)
from datapath.maps.layout import MapLayout

#: the maps of the anti-spoofing program (pinned under the agent's pin root)
ANTISPOOF: tuple[MapLayout, ...] = (endpoints.LAYOUT, ep_counters.LAYOUT)
#: the maps of the service and policy programs (pinned under the features pin dir)
FEATURES: tuple[MapLayout, ...] = (
    lb_services.LAYOUT, lb_slots.LAYOUT, lb_maglev.LAYOUT, lb_backends.LAYOUT,
    lb_conntrack.LAYOUT, lb_affinity.LAYOUT, ipcache.LAYOUT, policy_endpoints.LAYOUT,
    policy_rules.LAYOUT, policy_conntrack.LAYOUT, policy_denied.LAYOUT,
    # the IPv6 twins of the maps keyed or valued by addresses
    lb_services.LAYOUT6, lb_backends.LAYOUT6, lb_conntrack.LAYOUT6, lb_affinity.LAYOUT6,
    ipcache.LAYOUT6, policy_endpoints.LAYOUT6, policy_conntrack.LAYOUT6)
#: every map by name
ALL: dict[str, MapLayout] = {m.name: m for m in (*ANTISPOOF, *FEATURES)}

__all__ = ["ALL", "ANTISPOOF", "FEATURES", "MapLayout"]
