"""The agent calls its EndpointHooks (added, removed, resync after restart), serves
/healthz and /metrics, and writes the heartbeat the failover controller reads."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from datapath.config import AgentSettings
from datapath.hooks import Endpoint
from netbed.testbed import Testbed

ROOT = str(Path(__file__).resolve().parents[2])
HTTP = ("import sys, urllib.request, urllib.error\n"
        "try:\n r = urllib.request.urlopen('http://127.0.0.1:9402' + sys.argv[1])\n"
        " print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n")


class RecordingHook:
    """Appends one JSON line per call to $STICKYIP_TEST_HOOK_LOG."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, event: str, eps: list[Endpoint]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, "eps": [
                {"pod": e.pod, "address": str(e.address), "host_ifname": e.host_ifname,
                 "host_ifindex": e.host_ifindex} for e in eps]}) + "\n")

    async def endpoint_added(self, ep: Endpoint) -> None:
        self._write("added", [ep])

    async def endpoint_removed(self, ep: Endpoint) -> None:
        self._write("removed", [ep])

    async def resync(self, endpoints: list[Endpoint]) -> None:
        self._write("resync", endpoints)


def recording_hook(settings: AgentSettings) -> RecordingHook:
    return RecordingHook(os.environ["STICKYIP_TEST_HOOK_LOG"] + "." + settings.node)


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines()]


async def test_hooks_health_metrics_and_heartbeat(tmp_path: Path) -> None:
    log = tmp_path / "hooks"
    async with Testbed(nodes=1, hooks=[f"{__name__}:recording_hook"],
                       agent_env={"PYTHONPATH": ROOT,
                                  "STICKYIP_TEST_HOOK_LOG": str(log)}) as tb:
        path = Path(f"{log}.node-1")
        assert [e["event"] for e in _events(path)] == ["resync"]
        pod = await tb.add_pod("node-1", "default", "hooked")
        added = _events(path)[-1]
        assert added["event"] == "added"
        assert added["eps"][0]["address"] == pod.address
        assert added["eps"][0]["host_ifname"] == pod.result["interfaces"][0]["name"]
        assert added["eps"][0]["host_ifindex"] > 0

        tb.kill_agent("node-1")
        await tb.start_agent("node-1")
        resync = _events(path)[-1]
        assert resync["event"] == "resync"
        assert [e["address"] for e in resync["eps"]] == [pod.address]

        await tb.del_pod(pod)
        assert _events(path)[-1]["event"] == "removed"

        health = tb.exec_in("node-1", [sys.executable, "-c", HTTP, "/healthz"])
        status, body = health.stdout.decode().split("\n", 1)
        assert status == "200" and json.loads(body)["store"] is True
        metrics = tb.exec_in("node-1", [sys.executable, "-c", HTTP, "/metrics"]).stdout.decode()
        assert 'stickyip_datapath_cni_requests_total{command="DEL",result="ok"} 1.0' in metrics

        hb = await tb.ipam.node_health("node-1")
        assert 0 < time.time() - hb.heartbeat_at < 30
        # The store going away turns /healthz to 503 (and ADD to "try again").
        assert tb.redis is not None
        tb.redis.kill9()
        bad = tb.exec_in("node-1", [sys.executable, "-c", HTTP, "/healthz"], timeout=60)
        assert bad.stdout.decode().split("\n", 1)[0] == "503"
        netns = tb.new_pod_netns()
        call = tb.cni("node-1", "ADD", container_id="nostore", netns=f"/run/netns/{netns}",
                      args="K8S_POD_NAMESPACE=default;K8S_POD_NAME=x;K8S_POD_UID=u")
        assert call.out is not None and call.out["code"] == 11, call
        status = tb.cni("node-1", "STATUS")
        assert status.rc != 0 and status.out is not None and status.out["code"] == 50
