"""Prometheus metrics of the scheduler and its controllers (one registry per app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.decisions = Counter("stickyip_scheduler_decisions_total",
                                 "Scheduling decisions by result", ["result"], registry=r)
        self.decision_seconds = Histogram(
            "stickyip_scheduler_decision_seconds", "Time to filter, score and reserve",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0), registry=r)
        self.bindings = Counter("stickyip_scheduler_bindings_total", "pods/binding calls by "
                                "result", ["result"], registry=r)
        self.leader = Gauge("stickyip_scheduler_is_leader", "1 while this replica holds the "
                            "leader Lease", registry=r)
        self.rehomed = Counter("stickyip_scheduler_rehomed_total", "Reservations re-homed off "
                               "confirmed-gone nodes, by how", ["how"], registry=r)
        self.nodes_gone = Counter("stickyip_scheduler_nodes_confirmed_gone_total",
                                  "Nodes confirmed gone and fenced", registry=r)
        self.gc = Counter("stickyip_scheduler_gc_total", "GC actions applied, by operation",
                          ["op"], registry=r)
        self.pool_addresses = Gauge("stickyip_ipam_pool_addresses", "Addresses per pool by "
                                    "state (used, free, excluded)", ["pool", "state"],
                                    registry=r)
        self.pool_blocks = Gauge("stickyip_ipam_pool_blocks", "Node blocks per pool by state "
                                 "(claimed, free)", ["pool", "state"], registry=r)
        self.reservations = Gauge("stickyip_ipam_reservations", "Sticky reservations by state",
                                  ["pool", "state"], registry=r)
        self.failover_pending = Gauge(
            "stickyip_failover_pending_reservations", "Reservations homed on a node that is "
            "deleted or out-of-service, by node-failure policy", ["policy"], registry=r)
        self.heartbeat = Gauge("stickyip_agent_heartbeat_timestamp_seconds", "Last heartbeat "
                               "each node agent wrote to the IPAM (Unix time)", ["node"],
                               registry=r)
        self.store_up = Gauge("stickyip_ipam_store_up", "1 when the last IPAM statistics pass "
                              "reached Redis", registry=r)
        self.reconcile_conflicts = Gauge(
            "stickyip_reconcile_conflicts", "Addresses running pods use that the IPAM gives "
            "to another owner, or another pod also uses, or the pod's reservation does not "
            "hold (last reconciliation pass)", registry=r)
        self.reconcile_restored = Counter(
            "stickyip_reconcile_restored_total", "Reservations restored for running pods "
            "after the IPAM had lost them", registry=r)
        self.reconcile_passes = Counter("stickyip_reconcile_passes_total", "Reconciliation "
                                        "passes completed", registry=r)
        self.reconcile_seconds = Gauge("stickyip_reconcile_seconds", "Duration of the last "
                                       "reconciliation pass", registry=r)
        self.store_changes = Counter(
            "stickyip_ipam_store_changes_total", "Times the IPAM store's identity changed "
            "(restart, failover, restore) while this replica followed it", registry=r)
        self.extender = Histogram("stickyip_scheduler_extender_seconds", "Extender request "
                                  "handling time", ["verb"],
                                  buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1),
                                  registry=r)
