"""The whole system of the demo, started in order and torn down in reverse even after
a failure or Ctrl-C: Redis (AOF, unix socket), the webhook over HTTPS with a generated
CA, the Kubernetes API stand-in calling that webhook on Pod CREATE, its StatefulSet
controller, the sticky scheduler, the stand-in kubelet and (as root) three nodes with their
agents and the eBPF datapath in network namespaces."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import secrets
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from demo.config import DemoSettings
from demo.errors import ComponentFailed
from demo.procs import (
    Component,
    Supervisor,
    free_port,
    redis_answers,
    start_redis,
    stickyip_command,
)
from demo.tls import TlsFiles, make_webhook_pair
from ipam import PoolSpec, RedisIpam, open_ipam
from kubestandin import KubeStandIn, WebhookTarget, objects
from netbed.kubelet import AnnotationRuntime, Kubelet, PodRuntime
from netbed.lifecycle import Lifecycle

SCHEDULER = "stickyip-scheduler"
FIXED_IP_LABEL = "stickyip.io/fixed-ip"
REPO = Path(__file__).resolve().parent.parent


class Progress:
    """Set-up progress lines: ``  starting X ... ok (0.4 s)``."""

    def __init__(self, out: Callable[[str], None] | None = None) -> None:
        self.out = out or (lambda s: print(s, flush=True))

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        t0 = time.monotonic()
        self.out(f"  - {what} ...")
        try:
            yield
        except BaseException:
            self.out(f"    failed ({time.monotonic() - t0:.1f} s)")
            raise
        self.out(f"    ok ({time.monotonic() - t0:.1f} s)")

    def note(self, text: str) -> None:
        self.out(f"    {text}")


class System(Lifecycle):
    """Use as ``async with System(settings, datapath=...) as sys:``."""

    def __init__(self, settings: DemoSettings, *, datapath: Any = None,
                 progress: Progress | None = None) -> None:
        self.s = settings
        self.run_id = secrets.token_hex(3)
        self.progress = progress or Progress()
        self.datapath = datapath  # demo.datapath.Datapath or None
        self.dir = Path(tempfile.mkdtemp(prefix=f"stickyip-demo-{self.run_id}-",
                                         dir=settings.work_dir or None))
        # Unix sockets (Redis, agents) need short paths (108 bytes): their own directory.
        self.sockets = Path(tempfile.mkdtemp(prefix=f"sipd{self.run_id}-"))
        self.sup = Supervisor(self.dir)
        self.redis_url = ""
        self.ipam: RedisIpam | None = None
        self.api: KubeStandIn | None = None
        self.kubelet: Kubelet | None = None
        self.tls: TlsFiles | None = None
        self.webhook: Component | None = None
        self.scheduler: Component | None = None
        self.nodes = [f"node-{i}" for i in range(1, settings.nodes + 1)]
        self.errors: list[str] = []

    # ------------------------------------------------------------ lifecycle

    def _env(self) -> dict[str, str]:
        fast = self.s.fast
        # Run from the checkout: the components import ipam/scheduler/webhooks from here.
        pythonpath = str(REPO)
        return {
            "PYTHONPATH": pythonpath,
            "STICKYIP_REDIS_URL": self.redis_url,
            "STICKYIP_SCHEDULER_FAILOVER_PERIOD": "0.5" if fast else "1",
            "STICKYIP_SCHEDULER_GC_PERIOD": "0.5" if fast else "1",
            "STICKYIP_SCHEDULER_RETRY_PERIOD": "0.5" if fast else "1",
            # Records younger than the grace are left alone by the GC; the demo's are
            # seconds old when it scales down.
            "STICKYIP_SCHEDULER_GC_GRACE": "1" if fast else "3",
            "STICKYIP_SCHEDULER_WATCH_TIMEOUT": "60",
        }

    async def start(self) -> None:
        p = self.progress
        with p.step("Redis with AOF on a unix socket (the IPAM store)"):
            comp, self.redis_url = start_redis(self.sup, self.dir, self.sockets)
            await self.sup.wait_until(comp, lambda: redis_answers(self.redis_url),
                                      within=30, what="answering PING")
            self.ipam = await open_ipam(self.redis_url, actor="demo")
            await self.ipam.apply_pool(PoolSpec(name=self.s.pool, cidr=self.s.pool_cidr,
                                                block_size=self.s.block_size))
            p.note(f"pool {self.s.pool}: {self.s.pool_cidr}, /{self.s.block_size} node blocks")
            if self.s.dual_stack:
                await self.ipam.apply_pool(PoolSpec(name=self.s.pool6, cidr=self.s.pool6_cidr,
                                                    block_size=self.s.block_size6))
                p.note(f"pool {self.s.pool6}: {self.s.pool6_cidr}, /{self.s.block_size6} "
                       "node blocks (dual-stack: one address of each family per pod)")
        port = free_port()
        with p.step("Kubernetes API stand-in with its StatefulSet controller"):
            self.tls = make_webhook_pair(self.dir)
            hook = WebhookTarget(url=f"https://127.0.0.1:{port}/mutate-pods",
                                 ca_file=str(self.tls.ca), name="pods.stickyip.io",
                                 object_selector={"matchLabels": {FIXED_IP_LABEL: "true"}},
                                 failure_policy="Fail", timeout_seconds=5)
            self.api = KubeStandIn(statefulset_controller=True, auto_ready=False,
                                   mutating_webhooks=[hook])
            await self.api.start()
            await self.api.create(objects.namespace(self.s.namespace))
            p.note(f"{self.api.url}; calls the mutating webhook on Pod CREATE for "
                   f"{FIXED_IP_LABEL}=true (failurePolicy Fail)")
        with p.step("admission webhook over HTTPS (certificate from a fresh CA)"):
            tls = self.tls
            self.webhook = self.sup.start("webhook", [
                *stickyip_command(), "--redis-url", self.redis_url, "--log-level", "info",
                "webhook", "--cert", str(tls.cert), "--key", str(tls.key),
                "--host", "127.0.0.1", "--port", str(port), "--scheduler-name", SCHEDULER,
            ], env=self._env() | {"STICKYIP_KUBE_HOST": self.api.url})
            await self.sup.wait_until(self.webhook, lambda: https_ok(port, tls.ca, "/readyz"),
                                      within=30, what="ready (/readyz)")
            p.note(f"https://127.0.0.1:{port}/mutate-pods, CA {tls.ca}")
        runtime: PodRuntime = AnnotationRuntime()
        addresses: dict[str, str] = {}
        if self.datapath is not None:
            with p.step(f"{len(self.nodes)} nodes in network namespaces with their agents "
                        "(eBPF datapath)"):
                await self.datapath.start(self.nodes, self.redis_url, self.pools,
                                          env=self._env(), sup=self.sup, work=self.dir,
                                          sockets=self.sockets, api_url=self.api.url,
                                          note=p.note)
                runtime = self.datapath.runtime()
                addresses = {n: self.datapath.node_address(n) for n in self.nodes}
        for n in self.nodes:
            await self.api.create(objects.node(n, internal_ip=addresses.get(n)))
        with p.step("sticky scheduler (leader-elected)"):
            env = self._env() | {"STICKYIP_KUBE_HOST": self.api.url}
            self.scheduler = self.sup.start("scheduler", [
                *stickyip_command(), "--redis-url", self.redis_url, "--log-level", "info",
                "scheduler", "--name", SCHEDULER], env=env)
            await wait_leader(self.api, self.scheduler)
        self.kubelet = Kubelet(self.api, runtime, self.nodes, on_error=self._kubelet_error)
        self.kubelet.start()
        p.note(f"component logs in {self.dir}" + (
            "" if self.s.keep_logs else " (removed at the end; --keep-logs keeps them)"))

    @property
    def pools(self) -> str:
        """The pool annotation and network config: 'v4pool,v6pool' when dual-stack."""
        return f"{self.s.pool},{self.s.pool6}" if self.s.dual_stack else self.s.pool

    def _kubelet_error(self, msg: str) -> None:
        self.errors.append(msg)
        self.progress.out(f"    ! kubelet: {msg}")

    async def close(self) -> None:
        """Everything goes, in reverse order; each step runs even if another failed."""
        if self.kubelet is not None:
            with contextlib.suppress(Exception):
                await self.kubelet.stop(remove_pods=self.datapath is not None)
        if self.scheduler is not None:
            self.sup.stop(self.scheduler)
        if self.datapath is not None:
            with contextlib.suppress(Exception):
                await self.datapath.close()
        if self.api is not None:
            with contextlib.suppress(Exception):
                await self.api.stop()
        if self.ipam is not None:
            with contextlib.suppress(Exception):
                await self.ipam.aclose()
        self.sup.close()
        shutil.rmtree(self.sockets, ignore_errors=True)
        if self.s.keep_logs:
            print(f"logs kept in {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -------------------------------------------------------------- actions

    async def kill_node(self, node: str) -> None:
        """Power the node off: its agent stops, its pods vanish, its Node is deleted."""
        assert self.api is not None and self.kubelet is not None
        await self.kubelet.lose_node(node)
        if self.datapath is not None:
            await self.datapath.kill_node(node)
        await self.api.delete("v1", "Node", node)
        self.nodes.remove(node)


async def wait_leader(api: KubeStandIn, comp: Component, *, name: str = SCHEDULER,
                      namespace: str = "kube-system", within: float = 30) -> None:
    """Until the scheduler ``comp`` holds its leader Lease ``namespace/name``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not comp.alive():
            raise ComponentFailed(f"scheduler exited ({comp.proc.returncode}):\n"
                                  + comp.tail())
        lease = await api.get("coordination.k8s.io/v1", "Lease", name, namespace)
        if lease and (lease.get("spec") or {}).get("holderIdentity"):
            return
        await asyncio.sleep(0.05)
    raise ComponentFailed(f"scheduler did not take its leader Lease within {within:.0f}s:\n"
                          + comp.tail())


def https_ok(port: int, ca: Path, path: str) -> bool:
    """An HTTPS GET of ``path`` on 127.0.0.1:``port`` answers 200 (CA ``ca``)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=0.5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
