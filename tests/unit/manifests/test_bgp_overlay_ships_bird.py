"""overlays/bgp runs BIRD beside every agent, from the same image, on the config
file and control socket the agent's settings (as the overlay sets them) use."""

from __future__ import annotations

import re
from typing import Any

import pytest

from datapath.config import AgentSettings
from tests.unit.manifests.conftest import INSTALLS, find, rendered
from tests.unit.manifests.test_manifest_invariants import named_container

Pod = dict[str, Any]


def _pod(name: str) -> Pod:
    pod: Pod = find(rendered(name), "DaemonSet", "stickyip-agent")["spec"]["template"]["spec"]
    return pod


def _agent_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> AgentSettings:
    """The agent's settings from its rendered environment (literal values and
    envFrom ConfigMaps), built the way the agent builds them."""
    objs = rendered(name)
    agent = named_container(_pod(name), "agent")
    for ref in agent.get("envFrom") or []:
        data = find(objs, "ConfigMap", ref["configMapRef"]["name"])["data"]
        unknown = {k for k in data if k.startswith("STICKYIP_AGENT_")
                   and k.removeprefix("STICKYIP_AGENT_").lower() not in AgentSettings.model_fields}
        assert not unknown, f"not agent settings: {unknown}"
        for k, v in data.items():
            monkeypatch.setenv(k, v)
    for e in agent.get("env") or []:
        if "value" in e and e["name"].startswith("STICKYIP_AGENT_"):
            # as Kubernetes expands a Service's variables (an address, a port)
            value = re.sub(r"\$\(\w+_SERVICE_HOST\)", "10.96.0.1", e["value"])
            monkeypatch.setenv(e["name"], re.sub(r"\$\(\w+_SERVICE_PORT\)", "1", value))
    return AgentSettings()


def _mounts(c: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in c["volumeMounts"]}


def test_bird_runs_beside_the_agent_on_its_config_and_socket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pod = _pod("bgp")
    agent, bird = named_container(pod, "agent"), named_container(pod, "bird")
    assert bird["image"] == agent["image"]
    settings = _agent_settings("bgp", monkeypatch)
    assert settings.routing == "bgp"
    script = bird["args"][0]
    (conf,) = re.findall(r"^\s*conf=(\S+)$", script, re.M)
    assert conf == settings.bird_config
    assert re.search(rf'exec bird -f -c "\$conf" -s {re.escape(settings.bird_socket)}$',
                     script.strip())
    # The config file and the socket live in directories both containers mount
    # from the same volumes.
    for path in (settings.bird_config, settings.bird_socket):
        directory = path.rsplit("/", 1)[0]
        assert _mounts(agent)[directory] == _mounts(bird)[directory], path
    assert bird["livenessProbe"]["exec"]["command"][:3] == ["birdc", "-s", settings.bird_socket]


@pytest.mark.parametrize("name", [n for n in INSTALLS if n != "bgp"])
def test_other_installs_route_directly_without_bird(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [c["name"] for c in _pod(name)["containers"]] == ["agent"]
    assert _agent_settings(name, monkeypatch).routing == "direct"
