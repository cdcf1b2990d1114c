"""The agent exports its datapath drops by reason (``stickyip_datapath_drops_total``:
anti-spoofing counters summed over endpoints, plus what hooks report) and the fill
level of every pinned eBPF map (``stickyip_bpf_map_entries`` / ``_max_entries``)
from every part that owns maps; one unreadable part does not break a scrape."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from datapath.agent import Agent
from datapath.config import AgentSettings
from datapath.errors import BpfFailure
from datapath.fakes import FakeNetlink, MemoryEndpointProgram, MemoryEndpointRecords
from datapath.hooks import Endpoint
from datapath.metrics import AgentMetrics
from ipam import RedisIpam


def _per_endpoint() -> dict[str, dict[str, int]]:
    return {"sipa": {"spoofed_packets": 3, "spoofed_bytes": 300, "fenced_packets": 0,
                     "other_packets": 1},
            "sipb": {"spoofed_packets": 2, "spoofed_bytes": 200, "fenced_packets": 5,
                     "other_packets": 0}}


def _broken() -> dict[str, int]:
    raise BpfFailure("the service and policy programs are not loaded")


def _broken_fill() -> dict[str, tuple[int, int]]:
    raise BpfFailure("the anti-spoofing program is not loaded")


def _drops(registry: CollectorRegistry, *reasons: str) -> dict[str, float | None]:
    return {r: registry.get_sample_value("stickyip_datapath_drops_total", {"reason": r})
            for r in reasons}


def _fill(registry: CollectorRegistry, bpf_map: str) -> tuple[float | None, float | None]:
    """A map's (entries, max_entries) as exported."""
    return (registry.get_sample_value("stickyip_bpf_map_entries", {"map": bpf_map}),
            registry.get_sample_value("stickyip_bpf_map_max_entries", {"map": bpf_map}))


def test_drops_are_summed_by_reason_over_endpoints_and_hooks() -> None:
    m = AgentMetrics(_per_endpoint, drops=[lambda: {"policy": 7}, _broken])
    assert _drops(m.registry, "spoofed", "fenced", "other", "policy") == {
        "spoofed": 5, "fenced": 5, "other": 1, "policy": 7}
    # the per-endpoint families are still there
    assert m.registry.get_sample_value("stickyip_datapath_spoofed_packets_total",
                                       {"endpoint": "sipa"}) == 3


def test_every_anti_spoofing_reason_is_a_series_before_the_first_drop() -> None:
    m = AgentMetrics(dict)
    assert _drops(m.registry, "spoofed", "fenced", "other") == {
        "spoofed": 0, "fenced": 0, "other": 0}


def test_map_fill_from_every_source_and_a_broken_one_is_skipped() -> None:
    m = AgentMetrics(dict, map_fill=[
        lambda: {"stickyip_endpoints": (2, 16384), "stickyip_ep_counters": (1, 16384)},
        _broken_fill,
        lambda: {"stickyip_lbct": (60000, 65536)}])
    assert _fill(m.registry, "stickyip_endpoints") == (2, 16384)
    assert _fill(m.registry, "stickyip_lbct") == (60000, 65536)
    assert _fill(m.registry, "stickyip_ep_counters") == (1, 16384)


class StatsHook:
    """A features hook that owns maps and drops packets."""

    async def endpoint_added(self, ep: Endpoint) -> None: ...

    async def endpoint_removed(self, ep: Endpoint) -> None: ...

    async def resync(self, endpoints: list[Endpoint]) -> None: ...

    def map_fill(self) -> dict[str, tuple[int, int]]:
        return {"stickyip_svc": (4, 4096)}

    def drops(self) -> dict[str, int]:
        return {"policy": 9}


class PlainHook:
    async def endpoint_added(self, ep: Endpoint) -> None: ...

    async def endpoint_removed(self, ep: Endpoint) -> None: ...

    async def resync(self, endpoints: list[Endpoint]) -> None: ...


async def test_the_agent_wires_the_hooks_that_report(ipam: RedisIpam, tmp_path: Path) -> None:
    settings = AgentSettings(node="node-a", state_dir=str(tmp_path), socket=str(tmp_path / "s"),
                             metrics_port=0)
    agent = Agent(settings, ipam, hooks=[PlainHook(), StatsHook()], netlink=FakeNetlink(),
                  program=MemoryEndpointProgram(), records=MemoryEndpointRecords())
    assert _fill(agent.metrics.registry, "stickyip_svc") == (4, 4096)
    assert _drops(agent.metrics.registry, "policy") == {"policy": 9}
