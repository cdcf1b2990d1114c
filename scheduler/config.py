"""Settings of the sticky scheduler and its controllers (``STICKYIP_SCHEDULER_*``)."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STICKYIP_SCHEDULER_", extra="ignore")

    name: str = Field(default="stickyip-scheduler",
                      description="spec.schedulerName of the pods this scheduler places")
    extender_port: int = Field(default=0, ge=0, le=65535,
                               description="serve the kube-scheduler extender endpoints on "
                               "this port instead of scheduling (0: off)")
    extender_host: str = Field(default="0.0.0.0", description="extender listen address")
    identity: str = Field(default_factory=_identity,
                          description="this replica's holder identity in the leader Lease")
    lease_name: str = Field(default="stickyip-scheduler", description="leader Lease name")
    lease_namespace: str = Field(default="kube-system", description="leader Lease namespace")
    lease_duration: float = Field(default=15.0, description="seconds a leader Lease lasts "
                                  "without renewal before another replica may take it")
    renew_period: float = Field(default=5.0, description="seconds between Lease renewals")
    leader_election: bool = Field(default=True, description="run leader election (disable "
                                  "only with exactly one replica)")
    percentage_of_nodes_to_score: int = Field(
        default=0, ge=0, le=100, description="stop filtering once this share of nodes is "
        "feasible (0: adaptive like kube-scheduler, 100: all nodes)")
    retry_period: float = Field(default=2.0, description="seconds before an unschedulable "
                                "pod is tried again (doubling up to 30s)")
    node_grace: float = Field(default=40.0, description="seconds a node must be NotReady "
                              "(with an expired agent heartbeat) before it is confirmed gone")
    heartbeat_ttl: float = Field(default=30.0, description="seconds after which a node "
                                 "agent's heartbeat counts as expired")
    failover_period: float = Field(default=5.0, description="seconds between failover checks")
    gc_grace: float = Field(default=300.0, description="seconds an ephemeral lease's pod must "
                            "be gone (and a record unchanged) before the GC frees it")
    gc_period: float = Field(default=60.0, description="seconds between GC passes")
    address_view_ttl: float = Field(default=5.0, description="seconds a pool's free-address "
                                    "view is reused for scoring before it is re-read")
    watch_timeout: int = Field(default=300, description="server-side timeout of each watch "
                               "request in seconds (it is then resumed)")
    stats_period: float = Field(default=30.0, description="seconds between IPAM statistics "
                                "passes for /metrics (pool use, reservations, heartbeats)")
    reconcile_period: float = Field(default=600.0, gt=0, description="seconds between "
                                    "passes comparing running pods with the IPAM (also run "
                                    "at start and when the store restarts or fails over)")
    metrics_port: int = Field(default=0, ge=0, le=65535,
                              description="serve Prometheus /metrics on this port (0: off)")
