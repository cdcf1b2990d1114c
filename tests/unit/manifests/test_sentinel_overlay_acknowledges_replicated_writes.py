"""The Sentinel overlay's durability settings, read from what kustomize renders and
what its configure script writes: every component waits for one replica before it
acknowledges a write, a master cut off from its replicas stops accepting writes, and
the Sentinels' timings keep a failover inside the 10 s the docs promise. The fault
tests (tests/integration/test_ha_failover_loses_no_acknowledged_write.py) run these
very settings on real processes."""

from __future__ import annotations

import os
from typing import Any

import pytest

from ipam.config import IpamSettings
from ipam.connection import parse_sentinel_url
from tests.support.ha_store import PODS, Overlay, Timings
from tests.unit.manifests.conftest import rendered

Objs = list[dict[str, Any]]


def container_env(objs: Objs, c: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom ConfigMaps, then
    env (later entries win)."""
    env: dict[str, str] = {}
    for src in c.get("envFrom") or []:
        ref = src.get("configMapRef")
        if ref:
            (cm,) = [o for o in objs if o["kind"] == "ConfigMap"
                     and o["metadata"]["name"] == ref["name"]]
            env.update(cm.get("data") or {})
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
    return env


def store_clients(objs: Objs) -> dict[str, dict[str, str]]:
    """workload/container -> environment, for every container told where the store is."""
    out = {}
    for o in objs:
        if o["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"):
            continue
        pod = o["spec"]["template"]["spec"]
        for c in list(pod.get("initContainers") or []) + list(pod["containers"]):
            env = container_env(objs, c)
            if "STICKYIP_REDIS_URL" in env:
                out[f"{o['metadata']['name']}/{c['name']}"] = env
    return out


def test_every_component_waits_for_a_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    clients = store_clients(rendered("sentinel"))
    # the three components that write to the store
    assert {name.split("/")[0] for name in clients} >= {
        "stickyip-webhook", "stickyip-scheduler", "stickyip-agent"}, clients
    for name, env in clients.items():
        url = env["STICKYIP_REDIS_URL"]
        assert url.startswith("redis+sentinel://"), (name, url)
        for var in ("STICKYIP_STORE_SERVICE_HOST", "STICKYIP_STORE_SERVICE_PORT"):
            url = url.replace(f"$({var})", "10.96.0.10" if "HOST" in var else "26379")
        assert parse_sentinel_url(url).service == Overlay.rendered().service
        # read by the code's own settings class, as the entry points do
        for k in [k for k in os.environ if k.startswith("STICKYIP_")]:
            monkeypatch.delenv(k)
        for k, v in env.items():
            if k.startswith("STICKYIP_REDIS"):
                monkeypatch.setenv(k, v)
        assert IpamSettings().redis_replicas == 1, name


def test_without_the_overlay_nothing_waits_for_a_replica() -> None:
    for name, env in store_clients(rendered("default")).items():
        assert env.get("STICKYIP_REDIS_REPLICAS", "0") == "0", name


def test_redis_and_sentinel_settings() -> None:
    overlay = Overlay.rendered()
    redis_conf, sentinel_conf = overlay.configs()
    t = Timings.of(overlay)
    assert redis_conf["appendonly"] == "yes" and redis_conf["appendfsync"] == "everysec"
    # the master counts the same replicas the clients wait for
    assert int(redis_conf["min-replicas-to-write"]) == int(
        overlay.component_env["STICKYIP_REDIS_REPLICAS"]) == 1
    # replicas acknowledge every second: several missed acknowledgements, not one slow
    # one; and a master cut off from its replicas refuses writes no later than the
    # Sentinels may declare it down and promote another
    assert 3 <= t.max_lag_s <= t.down_after_s
    # the replica a failover left to resync in full is the new master's only one:
    # every second before its resync starts is a second of refused writes
    assert redis_conf["repl-diskless-sync-delay"] == "0"
    # above the 2 s an AOF fsync may block Redis with everysec; low enough that a
    # failover (down-after plus about 2 s) stays inside 10 s
    assert 2 < t.down_after_s <= 6
    # a failed failover is retried after twice this: within a minute, not minutes
    assert t.down_after_s < t.failover_timeout_s <= 30
    # a majority of the Sentinels (one per pod) must agree that the master is down
    monitor = sentinel_conf["sentinel monitor"].split()
    assert int(monitor[-1]) == PODS // 2 + 1
