"""Command lines of what runs on a bed's nodes: the agent (inside its node's
namespace) and the environment of a CNI call, as a container runtime sets it."""

from __future__ import annotations

import os
from collections.abc import Sequence


def agent_command(stickyip: Sequence[str], *, netns_path: str, redis_url: str, node: str,
                  address: str, routing: str, socket: str, pin_root: str, state_dir: str,
                  default_pool: str, sync_interval: float, metrics_port: int = 0,
                  hooks: Sequence[str] = (), extra: Sequence[str] = ()) -> list[str]:
    """``stickyip agent`` for one node, entered into its namespace with nsenter."""
    cmd = ["nsenter", f"--net={netns_path}", "--", *stickyip,
           "--redis-url", redis_url, "--log-level", "info",
           "agent", "--node", node, "--node-address", address, "--routing", routing,
           "--socket", socket, "--pin-root", pin_root, "--state-dir", state_dir,
           "--metrics-port", str(metrics_port), "--default-pool", default_pool,
           "--sync-interval", str(sync_interval)]
    for hook in hooks:
        cmd += ["--hook", hook]
    return cmd + list(extra)


def pod_args(namespace: str, name: str, uid: str) -> str:
    """``CNI_ARGS`` of a Kubernetes pod."""
    return (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};"
            f"K8S_POD_UID={uid}")


def cni_env(command: str, *, container_id: str = "", netns: str = "", ifname: str = "eth0",
            args: str = "", cni_path: str = "", extra: dict[str, str] | None = None,
            drop: Sequence[str] = ()) -> dict[str, str]:
    """The environment of one CNI call (``extra`` added, ``drop`` removed); empty
    variables are left out, as a runtime leaves out what it does not know."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command,
           "CNI_CONTAINERID": container_id, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
           "CNI_ARGS": args, "CNI_PATH": cni_path, **(extra or {})}
    for name in drop:
        env.pop(name, None)
    return {k: v for k, v in env.items() if v != "" or k == "CNI_COMMAND"}
