"""The agent's Prometheus metrics (``stickyip_datapath_*``), in one registry served
at ``/metrics``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from datapath.errors import DatapathError

log = logging.getLogger("stickyip.datapath")

#: host veth name -> counter name -> value
DropCounts = Callable[[], dict[str, dict[str, int]]]
#: map name -> (entries, max_entries)
MapFill = Callable[[], dict[str, tuple[int, int]]]
#: drop reason -> packets
Drops = Callable[[], dict[str, int]]
#: anti-spoofing counter -> the reason it counts in stickyip_datapath_drops_total
DROP_REASONS = {"spoofed_packets": "spoofed", "fenced_packets": "fenced",
                "other_packets": "other"}


class _DropCollector(Collector):
    """Anti-spoofing drop counters read from the pinned map at scrape time."""

    def __init__(self, drop_counts: DropCounts, drops: Sequence[Drops] = ()) -> None:
        self.drop_counts = drop_counts
        self.drops = tuple(drops)

    def collect(self) -> Any:
        families = {name: CounterMetricFamily(f"stickyip_datapath_{name}", f"{name} dropped "
                                              "by anti-spoofing, per endpoint",
                                              labels=["endpoint"])
                    for name in ("spoofed_packets", "spoofed_bytes", "fenced_packets",
                                 "other_packets")}
        by_reason = dict.fromkeys(DROP_REASONS.values(), 0)
        for endpoint, counts in self.drop_counts().items():
            for name, family in families.items():
                family.add_metric([endpoint], counts.get(name, 0))
            for name, reason in DROP_REASONS.items():
                by_reason[reason] += counts.get(name, 0)
        for source in self.drops:
            try:
                for reason, packets in source().items():
                    by_reason[reason] = by_reason.get(reason, 0) + packets
            except DatapathError as e:  # a scrape must not fail because one map did
                log.warning("drop counters unreadable", extra={"error": str(e)})
        total = CounterMetricFamily("stickyip_datapath_drops", "packets the datapath "
                                    "dropped on this node, by reason", labels=["reason"])
        for reason, packets in sorted(by_reason.items()):
            total.add_metric([reason], packets)
        yield from families.values()
        yield total


class _MapFillCollector(Collector):
    """Entries and capacity of every pinned eBPF map, read at scrape time."""

    def __init__(self, sources: Sequence[MapFill]) -> None:
        self.sources = tuple(sources)

    def collect(self) -> Any:
        entries = GaugeMetricFamily("stickyip_bpf_map_entries",
                                    "entries in each pinned eBPF map", labels=["map"])
        capacity = GaugeMetricFamily("stickyip_bpf_map_max_entries",
                                     "capacity (max_entries) of each pinned eBPF map",
                                     labels=["map"])
        for source in self.sources:
            try:
                fill = source()
            except DatapathError as e:
                log.warning("eBPF map fill unreadable", extra={"error": str(e)})
                continue
            for name, (n, m) in sorted(fill.items()):
                entries.add_metric([name], n)
                capacity.add_metric([name], m)
        yield entries
        yield capacity


class AgentMetrics:
    """``drop_counts``: the anti-spoofing counters per endpoint; ``drops``: other
    parts' drops by reason; ``map_fill``: every part that owns pinned maps."""

    def __init__(self, drop_counts: DropCounts, *, drops: Sequence[Drops] = (),
                 map_fill: Sequence[MapFill] = ()) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("stickyip_datapath_cni_requests", "CNI requests served",
                                ["command", "result"], registry=r)
        self.latency = Histogram("stickyip_datapath_cni_request_seconds",
                                 "CNI request handling time", ["command"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
        self.endpoints = Gauge("stickyip_datapath_endpoints", "pod attachments on this node",
                               registry=r)
        self.fenced = Gauge("stickyip_datapath_fenced_endpoints",
                            "attachments fenced because IPAM re-homed their address",
                            registry=r)
        self.route_ops = Counter("stickyip_datapath_route_operations",
                                 "kernel route changes applied", ["op"], registry=r)
        self.syncs = Counter("stickyip_datapath_route_syncs", "route sync rounds",
                             ["result"], registry=r)
        self.bird_reloads = Counter("stickyip_datapath_bird_reloads",
                                    "BIRD reconfigurations", ["result"], registry=r)
        self.heartbeats = Counter("stickyip_datapath_heartbeats", "heartbeats written",
                                  ["result"], registry=r)
        self.follow_updates = Counter("stickyip_datapath_follow_updates",
                                      "routing updates followed, by kind (batch, snapshot)",
                                      ["kind"], registry=r)
        self.follow_gaps = Counter("stickyip_datapath_follow_gaps",
                                   "gaps in the followed change log (trimmed, identity, "
                                   "behind, other)", ["kind"], registry=r)
        self.follow_revision = Gauge("stickyip_datapath_follow_revision",
                                     "store revision of this node's routing view", registry=r)
        self.reasserted = Counter("stickyip_datapath_reasserted",
                                  "endpoints re-asserted after the store changed identity, "
                                  "by result (ok, restored, moved, conflict)", ["result"],
                                  registry=r)
        self.reassert_conflicts = Gauge(
            "stickyip_datapath_reassert_conflicts",
            "this node's endpoints whose address the store gives another owner (found at "
            "the last re-assert, after the store changed identity)", registry=r)
        self.conflicts = Counter(
            "stickyip_datapath_address_conflicts",
            "another host answered for a pod's address on the node's links: at ADD "
            "(refused) or at a re-check of a running fixed-IP pod", ["phase", "family"],
            registry=r)
        self.conflicts_now = Gauge(
            "stickyip_datapath_conflicting_endpoints",
            "running fixed-IP pods whose address another host answered for at the last "
            "re-check", registry=r)
        for phase in ("add", "recheck"):
            for family in ("4", "6"):
                self.conflicts.labels(phase, family)  # exported from the start, at 0
        r.register(_DropCollector(drop_counts, drops))
        r.register(_MapFillCollector(map_fill))
