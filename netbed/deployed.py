"""The node agent as the DaemonSet deploys it, read from ``manifests/base/agent.yaml``:
its hooks, its other flags and its ``STICKYIP_AGENT_*`` settings. The demo and the
node benchmark start their agents from this, so what they run and measure is the
configuration that ships; tests/unit/manifests/test_measured_is_deployed.py fails
when either stops doing so. (The CNI plugin file is the one
``datapath.cni.install`` writes in all of them.)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "manifests" / "base" / "agent.yaml"
#: Flags whose value is per node: every bed sets them itself.
PER_NODE = ("--node",)


@dataclass(frozen=True)
class DeployedAgent:
    hooks: tuple[str, ...]
    #: flags of ``stickyip agent`` beyond ``--node`` and ``--hook`` (none today)
    flags: tuple[str, ...]
    #: the STICKYIP_AGENT_* settings the DaemonSet gives as literal values
    env: dict[str, str] = field(default_factory=dict)
    #: the agents follow the routing feed (STICKYIP_AGENT_FEED names the cluster's
    #: feed Service): a bed runs a feed of its own for them (netbed.testbed)
    feed: bool = False

    @property
    def kube(self) -> bool:
        """The agent reads pods (and the features their Services and policies) from
        the Kubernetes API: a bed must give it one (the API stand-in)."""
        return self.env.get("STICKYIP_AGENT_KUBE", "").lower() in ("1", "true", "yes", "on")

    def settings(self) -> Any:
        """The :class:`datapath.config.AgentSettings` these give (defaults for the rest)."""
        from datapath.config import AgentSettings

        prefix = "STICKYIP_AGENT_"
        # Every field given (its default unless the DaemonSet sets it): this process's
        # own environment must not count.
        values: dict[str, Any] = {name: f.get_default(call_default_factory=True)
                                  for name, f in AgentSettings.model_fields.items()}
        values.update({k.removeprefix(prefix).lower(): v for k, v in self.env.items()})
        return AgentSettings.model_validate(values)


def container(manifest: Path, kind: str, name: str) -> dict[str, Any]:
    """Container ``name`` of the first ``kind`` (DaemonSet, Deployment) in ``manifest``."""
    import yaml

    for doc in yaml.safe_load_all(manifest.read_text()):
        if doc and doc.get("kind") == kind:
            for c in doc["spec"]["template"]["spec"]["containers"]:
                if c["name"] == name:
                    found: dict[str, Any] = c
                    return found
    raise LookupError(f"{manifest}: no {kind} with a {name!r} container")


def deployed_command(manifest: Path, kind: str, name: str) -> tuple[list[str], dict[str, str]]:
    """A ``stickyip`` container as its workload runs it: its arguments and the
    settings it gives as literal values (fieldRef ones are set per replica)."""
    c = container(manifest, kind, name)
    assert c["command"] == ["stickyip"], c["command"]
    env = {e["name"]: str(e["value"]) for e in c.get("env") or [] if "value" in e}
    return [str(a) for a in c["args"]], env


def agent_container(manifest: Path = MANIFEST) -> dict[str, Any]:
    return container(manifest, "DaemonSet", "agent")


def deployed_agent(manifest: Path = MANIFEST) -> DeployedAgent:
    c = agent_container(manifest)
    args = [str(a) for a in c["args"]]
    rest = args[args.index("agent") + 1:]
    hooks, flags, i = [], [], 0
    while i < len(rest):
        if rest[i] == "--hook":
            hooks.append(rest[i + 1])
            i += 2
        elif rest[i] in PER_NODE:
            i += 2
        else:
            flags.append(rest[i])
            i += 1
    given = {e["name"]: str(e["value"]) for e in c.get("env") or []
             if "value" in e and e["name"].startswith("STICKYIP_AGENT_")}
    # Values Kubernetes expands per cluster ($(SERVICE_VARIABLE)) are a bed's own.
    env = {k: v for k, v in given.items() if "$(" not in v}
    return DeployedAgent(hooks=tuple(hooks), flags=tuple(flags), env=env,
                         feed="STICKYIP_AGENT_FEED" in given)


@contextlib.asynccontextmanager
async def deployed_testbed(*, standin: dict[str, Any] | None = None, **kwargs: Any
                           ) -> AsyncIterator[tuple[Any, Any]]:
    """A :class:`netbed.testbed.Testbed` (``kwargs`` are its own) whose agents run as
    the DaemonSet runs them: its hooks, flags and settings (its sync interval, not the
    bed's faster one), a routing feed when the DaemonSet follows one, and, when they
    read the Kubernetes API, the API stand-in relayed into the node namespaces.
    ``standin``: options of that :class:`kubestandin.KubeStandIn` (default: no
    StatefulSet controller); given, the bed has a stand-in even if the agents do not
    read it. Yields (bed, stand-in or None)."""
    from kubestandin import KubeStandIn
    from netbed.relay import ThreadedRelay
    from netbed.testbed import Testbed

    agent = deployed_agent()
    env = {**agent.env, **kwargs.pop("agent_env", {})}
    bed = {"hooks": agent.hooks, "agent_args": agent.flags,
           "sync_interval": agent.settings().sync_interval, "feed": agent.feed, **kwargs}
    if not agent.kube and standin is None:
        async with Testbed(agent_env=env, **bed) as tb:
            yield tb, None
        return
    async with KubeStandIn(**{"statefulset_controller": False, **(standin or {})}) as api:
        relay = ThreadedRelay(int(api.url.rsplit(":", 1)[1]))
        try:
            async with Testbed(agent_env={**env, "STICKYIP_KUBE_HOST": api.url}, relay=relay,
                               **bed) as tb:
                yield tb, api
        finally:
            relay.close()
