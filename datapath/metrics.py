"""The agent's Prometheus metrics (``stickyip_datapath_*``), in one registry served
at ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

#: host veth name -> counter name -> value
DropCounts = Callable[[], dict[str, dict[str, int]]]


class _DropCollector(Collector):
    """Anti-spoofing drop counters read from the pinned map at scrape time."""

    def __init__(self, drop_counts: DropCounts) -> None:
        self.drop_counts = drop_counts

    def collect(self) -> Any:
        families = {name: CounterMetricFamily(f"stickyip_datapath_{name}", f"{name} dropped "
                                              "by anti-spoofing, per endpoint",
                                              labels=["endpoint"])
                    for name in ("spoofed_packets", "spoofed_bytes", "fenced_packets",
                                 "other_packets")}
        for endpoint, counts in self.drop_counts().items():
            for name, family in families.items():
                family.add_metric([endpoint], counts.get(name, 0))
        yield from families.values()


class AgentMetrics:
    def __init__(self, drop_counts: DropCounts) -> None:
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
        r.register(_DropCollector(drop_counts))
