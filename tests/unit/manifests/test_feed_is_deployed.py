"""The routing feed ships as the design says (docs/scale.md): a Deployment of three
replicas behind the ``stickyip-feed`` Service, on the host network and without
cluster DNS (the agents need it before the CNI works), following the same store as
the agents (the Sentinel overlay too); the agents follow it, found like the store
through the Service's variables. netbed reads that the DaemonSet's agents follow a
feed and runs one for its own."""

from __future__ import annotations

import re

import pytest

from datapath.config import AgentSettings, feed_addresses
from datapath.feedcli import FeedSettings
from netbed.deployed import deployed_agent
from tests.unit.manifests.conftest import INSTALLS, find, rendered


def env_of(container: dict[str, object]) -> dict[str, str]:
    return {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}  # type: ignore[attr-defined]


def container(objs: list[dict[str, object]], kind: str, name: str,
              cname: str) -> dict[str, object]:
    pod = find(objs, kind, name)["spec"]["template"]["spec"]
    found: dict[str, object] = next(c for c in pod["containers"] if c["name"] == cname)
    return found


@pytest.mark.parametrize("install", INSTALLS)
def test_agents_follow_the_feed_of_the_same_store(install: str) -> None:
    objs = rendered(install)
    feed = find(objs, "Deployment", "stickyip-feed")
    pod = feed["spec"]["template"]["spec"]
    assert feed["spec"]["replicas"] >= 3
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "Default"
    assert pod.get("enableServiceLinks", True) is True
    svc = find(objs, "Service", "stickyip-feed")
    var = "STICKYIP_FEED"
    agent = env_of(container(objs, "DaemonSet", "stickyip-agent", "agent"))
    assert agent["STICKYIP_AGENT_FEED"] == f"$({var}_SERVICE_HOST):$({var}_SERVICE_PORT)"
    feed_env = env_of(container(objs, "Deployment", "stickyip-feed", "feed"))
    # the same store as the agents (a Sentinel URL in that overlay)
    assert feed_env["STICKYIP_REDIS_URL"] == agent["STICKYIP_REDIS_URL"]
    # the Service leads to the port the feed listens on
    settings = FeedSettings.model_validate(
        {k.removeprefix("STICKYIP_FEED_").lower(): v for k, v in feed_env.items()
         if k.startswith("STICKYIP_FEED_")})
    c = container(objs, "Deployment", "stickyip-feed", "feed")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}  # type: ignore[attr-defined]
    [port] = svc["spec"]["ports"]
    assert ports[port["targetPort"]] == settings.listen_port
    # an agent given the expanded value parses it
    expanded = re.sub(r"\$\(\w+_HOST\)", "10.96.0.7", agent["STICKYIP_AGENT_FEED"])
    expanded = re.sub(r"\$\(\w+_PORT\)", str(port["port"]), expanded)
    assert feed_addresses(AgentSettings(node="n", feed=expanded).feed) == ["10.96.0.7:7470"]


def test_beds_run_a_feed_when_the_daemonset_follows_one() -> None:
    agent = deployed_agent()
    assert agent.feed
    assert "STICKYIP_AGENT_FEED" not in agent.env  # a per-cluster value: the bed's own
    assert agent.settings().feed == ""
