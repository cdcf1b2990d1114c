"""The agent's CNI socket server turns every outcome into a reply with a CNI code:
undecodable lines, unknown commands, datapath errors, a store outage, IPAM errors
and crashes, and counts each request."""

from __future__ import annotations

import json
from typing import Any

from datapath.errors import NotHome
from datapath.metrics import AgentMetrics
from datapath.server import CniServer
from ipam import IpamError, StoreUnavailable


def _server() -> CniServer:
    async def ok(req: dict[str, Any]) -> dict[str, Any]:
        return {"echo": req["containerId"]}

    def failing(error: Exception) -> Any:
        async def handler(_: dict[str, Any]) -> None:
            raise error
        return handler

    return CniServer("/nonexistent/agent.sock", {
        "ADD": ok, "DEL": failing(NotHome("homed on node-b", details="d")),
        "CHECK": failing(StoreUnavailable("redis down")), "GC": failing(IpamError("bad")),
        "STATUS": failing(ValueError("boom"))}, metrics=AgentMetrics(dict))


async def test_each_outcome_has_its_cni_code() -> None:
    server = _server()

    async def call(obj: Any) -> Any:
        return await server.handle(json.dumps(obj).encode())

    assert await call({"command": "ADD", "containerId": "c"}) == {
        "ok": True, "result": {"echo": "c"}}
    assert (await server.handle(b"{not json"))["code"] == 6
    assert (await call([1]))["code"] == 6
    assert (await call({"command": "NOPE"}))["code"] == 4
    assert await call({"command": "DEL"}) == {"ok": False, "code": 101,
                                              "msg": "homed on node-b", "details": "d"}
    assert (await call({"command": "CHECK"}))["code"] == 11
    assert (await call({"command": "GC"}))["code"] == 103
    crashed = await call({"command": "STATUS"})
    assert crashed["code"] == 103 and "boom" in crashed["msg"]
    registry = server.metrics.registry
    assert registry.get_sample_value("stickyip_datapath_cni_requests_total",
                                     {"command": "ADD", "result": "ok"}) == 1
    assert registry.get_sample_value("stickyip_datapath_cni_requests_total",
                                     {"command": "DEL", "result": "error"}) == 1
