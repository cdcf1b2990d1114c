"""``stickyip ipam check --against-cluster`` as an operator runs it: the real command
in a subprocess, a real store and the pods the API stand-in serves; it reports an
address in use that the IPAM does not know, exits non-zero, and changes nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ipam import PoolSpec, RedisIpam
from kubestandin import KubeStandIn, objects
from tests.support.cli import one_error_line, stickyip, stickyip_env


async def test_an_address_in_use_unknown_to_the_ipam_is_reported(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec, tmp_path: Path) -> None:
    async with KubeStandIn(statefulset_controller=False) as api:
        await api.create(objects.pod("job", node_name="n1"))
        await api.patch("v1", "Pod", "job", {"status": {
            "phase": "Running", "podIPs": [{"ip": "10.20.0.41"}]}}, subresource="status")
        env = stickyip_env(tmp_path, STICKYIP_REDIS_URL=redis_url, STICKYIP_KUBE_HOST=api.url)
        before = await ipam.redis.dbsize()
        proc = await asyncio.to_thread(stickyip, "ipam", "check", "--against-cluster",
                                       "-o", "json", env=env)
        assert proc.returncode == 1, proc.stderr
        rows = json.loads(proc.stdout)
        found = [r for r in rows if r.get("verdict")]
        assert [(r["verdict"], r["address"], r["pod"]) for r in found] == [
            ("unknown", "10.20.0.41", "default/job")]
        assert await ipam.redis.dbsize() == before, "a check writes nothing"

        table = await asyncio.to_thread(stickyip, "ipam", "check", "--against-cluster",
                                        env=env)
        assert "10.20.0.41" in table.stdout and "unknown" in table.stdout


async def test_without_cluster_credentials_it_says_so_in_one_line(
        redis_url: str, pool_a: PoolSpec, tmp_path: Path) -> None:
    env = stickyip_env(tmp_path, STICKYIP_REDIS_URL=redis_url)
    proc = await asyncio.to_thread(stickyip, "ipam", "check", "--against-cluster", env=env)
    assert proc.returncode != 0
    line = one_error_line(proc)
    assert "kube" in line.lower() or "credentials" in line.lower(), line
