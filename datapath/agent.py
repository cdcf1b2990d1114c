"""The node agent: serves CNI requests on a unix socket (pod veth, /32, routes,
anti-spoofing), keeps inter-node routes (direct or BIRD) in sync with IPAM, fences
addresses re-homed elsewhere, heartbeats, and repairs the datapath on start-up."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from datapath import bird, routing
from datapath.birdctl import BirdControl
from datapath.config import AgentSettings
from datapath.errors import (
    CheckFailed,
    DatapathError,
    InterfaceExists,
    InvalidConfig,
    InvalidEnvironment,
    NetlinkFailure,
    NotAvailable,
    NotHome,
    TryAgain,
    UnknownContainer,
)
from datapath.hooks import PRIO_ANTISPOOF, Endpoint, EndpointHook
from datapath.loader import AntispoofProgram
from datapath.maps import endpoints as endpoints_map
from datapath.maps import ep_counters
from datapath.models import AgentReply, EndpointRecord, host_ifname
from datapath.netlink import Netlink, enable_forwarding, netns_exists
from datapath.nodes import NodeDirectory
from datapath.podinfo import PodLookup
from datapath.store import EndpointStore
from ipam import (
    InvalidRequest,
    IpamError,
    LeaseKind,
    OwnerKey,
    RedisIpam,
    ReservationKey,
    RoutingView,
    StoreUnavailable,
    ephemeral_owner,
)

log = logging.getLogger("stickyip.datapath")

_STS_POD = re.compile(r"^(?P<sts>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<ord>\d+)$")


class _DropCollector(Collector):
    """Anti-spoofing drop counters read from the pinned map at scrape time."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Any:
        fams = {f: CounterMetricFamily(f"stickyip_datapath_{f}", f"{f} dropped by "
                                       "anti-spoofing, per endpoint", labels=["endpoint"])
                for f in ("spoofed_packets", "spoofed_bytes", "fenced_packets",
                          "other_packets")}
        for name, c in self.agent.drop_counters().items():
            for f, fam in fams.items():
                fam.add_metric([name], c.get(f, 0))
        yield from fams.values()


class Metrics:
    def __init__(self, agent: Agent) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("stickyip_datapath_cni_requests", "CNI requests served",
                                ["command", "result"], registry=r)
        self.latency = Histogram("stickyip_datapath_cni_request_seconds",
                                 "CNI request handling time", ["command"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
        self.endpoints = Gauge("stickyip_datapath_endpoints", "pod attachments on this node",
                               registry=r)
        self.fenced = Gauge("stickyip_datapath_fenced_endpoints",
                            "attachments fenced because IPAM re-homed their address",
                            registry=r)
        self.route_ops = Counter("stickyip_datapath_route_operations",
                                 "kernel route changes applied", ["op"], registry=r)
        self.syncs = Counter("stickyip_datapath_route_syncs", "route sync rounds",
                             ["result"], registry=r)
        self.bird_reloads = Counter("stickyip_datapath_bird_reloads",
                                    "BIRD reconfigurations", ["result"], registry=r)
        self.heartbeats = Counter("stickyip_datapath_heartbeats", "heartbeats written",
                                  ["result"], registry=r)
        r.register(_DropCollector(agent))


class Agent:
    def __init__(self, settings: AgentSettings, ipam: RedisIpam, *,
                 hooks: Sequence[EndpointHook] = (),
                 kube_pods: PodLookup | None = None) -> None:
        if not settings.node:
            raise InvalidConfig("the agent needs --node NAME")
        self.s = settings
        self.node = settings.node
        self.ipam = ipam
        self.hooks = list(hooks)
        self.kube_pods = kube_pods
        self.net = Netlink(route_protocol=settings.route_protocol)
        self.prog = AntispoofProgram(settings.pin_root)
        self.store = EndpointStore(settings.state_dir)
        self.nodes = NodeDirectory(ipam.redis)
        self.bird = BirdControl(config_path=settings.bird_config,
                                socket_path=settings.bird_socket, birdc=settings.birdc)
        self.gateway = ipaddress.IPv4Address(settings.gateway)
        self.address = settings.node_address
        self.metrics = Metrics(self)
        self._lock = asyncio.Lock()
        self._last_desired: set[routing.Route] | None = None
        self._last_full = 0.0
        self._bird_text = ""
        self._bird_ok = False
        self._bird_error = ""
        self._view: RoutingView | None = None
        self._healthy_sync = False
        self._ifindex: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.AbstractServer | None = None
        self._runner: web.AppRunner | None = None
        self.started = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        t0 = time.monotonic()
        await self.net.open()
        enable_forwarding()
        if self.s.cni_bin_dir:
            from datapath import cni

            log.info("CNI plugin installed", extra={"path": cni.install(self.s.cni_bin_dir)})
        if not self.address:
            self.address = await self.net.global_address(self.s.host_prefix)
        if self.address:
            await self.nodes.publish(self.node, self.address)
        await self.restore(asyncio.ensure_future(asyncio.to_thread(self.prog.load)))
        await self.sync_routes(force=True)
        await self._serve_socket()
        if self.s.metrics_port:
            await self._serve_http()
        self._tasks = [asyncio.create_task(self._sync_loop(), name="route-sync"),
                       asyncio.create_task(self._heartbeat_loop(), name="heartbeat")]
        self.started.set()
        log.info("agent started", extra={"node": self.node, "address": self.address,
                                         "endpoints": len(self.store.all()),
                                         "seconds": round(time.monotonic() - t0, 3)})

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.s.socket)
        if self._runner is not None:
            await self._runner.cleanup()
        # Programs stay attached and maps pinned: pods keep their traffic while the
        # agent is down or restarting.
        self.prog.close()
        await self.net.close()

    async def _serve_socket(self) -> None:
        os.makedirs(os.path.dirname(self.s.socket) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.s.socket)
        self._server = await asyncio.start_unix_server(self._client, path=self.s.socket)
        os.chmod(self.s.socket, 0o600)

    async def _serve_http(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._http_metrics)
        app.router.add_get("/healthz", self._http_healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.s.metrics_host, self.s.metrics_port)
        await site.start()

    async def _http_metrics(self, _: web.Request) -> web.Response:
        self.metrics.endpoints.set(len(self.store.all()))
        self.metrics.fenced.set(sum(1 for r in self.store.all() if r.fenced))
        body = await asyncio.to_thread(generate_latest, self.metrics.registry)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _http_healthz(self, _: web.Request) -> web.Response:
        store = await self.ipam.ping()
        ok = store and self.started.is_set()
        body = {"ok": ok, "store": store, "routes_synced": self._healthy_sync,
                "endpoints": len(self.store.all()),
                "bird": self._bird_ok if self.s.routing == "bgp" else None}
        return web.json_response(body, status=200 if ok else 503)

    # ------------------------------------------------------------ socket API

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            reply = await self.handle(line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def handle(self, line: bytes) -> AgentReply:
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError as e:
            return {"ok": False, "code": 6, "msg": f"cannot decode request: {e}"}
        command = str(req.get("command", ""))
        t0 = time.perf_counter()
        try:
            result = await self.dispatch(command, req)
            self.metrics.requests.labels(command, "ok").inc()
            return {"ok": True, "result": result}
        except DatapathError as e:
            self.metrics.requests.labels(command, "error").inc()
            log.warning("request failed", extra={"command": command, "error": str(e),
                                                 "container": req.get("containerId")})
            return {"ok": False, "code": e.code, "msg": str(e), "details": e.details}
        except StoreUnavailable as e:
            self.metrics.requests.labels(command, "error").inc()
            return {"ok": False, "code": 11, "msg": "IPAM store unavailable", "details": str(e)}
        except IpamError as e:
            self.metrics.requests.labels(command, "error").inc()
            return {"ok": False, "code": 103, "msg": str(e)}
        except Exception as e:
            log.exception("request crashed", extra={"command": command})
            self.metrics.requests.labels(command, "error").inc()
            return {"ok": False, "code": 103, "msg": f"internal error: {e}"}
        finally:
            self.metrics.latency.labels(command).observe(time.perf_counter() - t0)

    async def dispatch(self, command: str, req: dict[str, Any]) -> dict[str, Any] | None:
        if command == "ADD":
            async with self._lock:
                return await self.cni_add(req)
        if command == "DEL":
            async with self._lock:
                await self.cni_del(req)
            return None
        if command == "CHECK":
            await self.cni_check(req)
            return None
        if command == "GC":
            async with self._lock:
                return await self.cni_gc(req)
        if command == "STATUS":
            if not await self.ipam.ping():
                raise NotAvailable("IPAM store unreachable: cannot allocate addresses")
            return None
        if command == "ENDPOINTS":
            return {"endpoints": [r.model_dump(mode="json") for r in self.store.all()],
                    "counters": self.drop_counters()}
        if command == "SYNC":
            await self.sync_routes(force=True)
            return {"routes": [str(r.dst) for r in sorted(self._last_desired or set())]}
        raise InvalidEnvironment(f"unknown command {command!r}")

    # ------------------------------------------------------------------ CNI

    def _ids(self, req: dict[str, Any]) -> tuple[str, str]:
        cid, ifname = str(req.get("containerId", "")), str(req.get("ifname", ""))
        try:
            ephemeral_owner(cid, ifname)
        except InvalidRequest as e:
            raise InvalidEnvironment(str(e)) from e
        return cid, ifname

    def _pool(self, req: dict[str, Any]) -> str:
        conf = req.get("config") or {}
        pool = conf.get("pool") or (conf.get("ipam") or {}).get("pool") or self.s.default_pool
        if not isinstance(pool, str):
            raise InvalidConfig("'pool' must be a string")
        return pool

    async def _sticky_key(self, namespace: str, pod: str
                          ) -> tuple[ReservationKey, str | None] | None:
        """(reservation key, pool) of a StatefulSet pod, or None for other pods."""
        if self.kube_pods is not None:
            return await self.kube_pods(namespace, pod)
        m = _STS_POD.match(pod)
        if not m or not namespace:
            return None
        try:
            key = ReservationKey.of(namespace, m["sts"], int(m["ord"]))
        except IpamError:
            return None
        found = await self.ipam.reservation(key)
        return (key, found.pool) if found is not None else None

    async def cni_add(self, req: dict[str, Any]) -> dict[str, Any]:
        cid, ifname = self._ids(req)
        netns = str(req.get("netns", ""))
        args = req.get("args") or {}
        namespace, pod = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
        uid = args.get("K8S_POD_UID", "")
        if self.store.get(cid, ifname) is not None:
            raise InterfaceExists(f"interface {ifname} of container {cid} already exists")
        if not netns or not netns_exists(netns):
            raise UnknownContainer(f"network namespace {netns!r} does not exist")
        if await self.net.pod_link(netns, ifname) is not None:
            raise InterfaceExists(f"interface {ifname} already exists in {netns}")
        # A host veth named after this attachment without a record is the leftover of an
        # ADD interrupted by an agent crash: remove it so the retry can proceed.
        if await self.net.delete_link(host_ifname(self.s.host_prefix, cid, ifname)):
            log.warning("removed leftover veth of an interrupted ADD", extra={"container": cid})

        sticky = await self._sticky_key(namespace, pod)
        if sticky is not None:
            key, pool = sticky
            found = await self.ipam.reservation(key, pool=pool)
            if found is not None and found.node and found.node != self.node:
                raise NotHome(f"{namespace}/{pod}: reservation {key} ({found.address}) is "
                              f"homed on node {found.node!r}, not {self.node!r}; the pod "
                              "must run there (or the reservation be re-homed)")
            lease = await self.ipam.claim(key, pool=pool or self._pool(req), node=self.node,
                                          holder=uid, pod=f"{namespace}/{pod}")
            kind = "sticky"
        else:
            lease = await self.ipam.allocate(pool=self._pool(req), node=self.node,
                                             owner=ephemeral_owner(cid, ifname),
                                             pod=f"{namespace}/{pod}" if pod else "",
                                             holder=uid)
            kind = "ephemeral"
        if lease.address is None:
            raise TryAgain(f"IPAM gave {lease.owner} no address")
        rec = EndpointRecord(
            container_id=cid, ifname=ifname, netns=netns, address=lease.address,
            host_ifname=host_ifname(self.s.host_prefix, cid, ifname), pool=lease.pool,
            owner=lease.owner, kind=kind, epoch=lease.epoch, namespace=namespace, pod=pod,
            pod_uid=uid)
        try:
            await self._plumb(rec, create=True)
            idx = self._ifindex[rec.host_ifname]
            for hook in self.hooks:
                await hook.endpoint_added(rec.endpoint(idx))
        except BaseException:
            for hook in self.hooks:  # undo what hooks may have set up for it
                with contextlib.suppress(Exception):
                    await hook.endpoint_removed(rec.endpoint(self._ifindex.get(
                        rec.host_ifname, 0)))
            await self._unplumb(rec)
            await self._release(rec)
            raise
        log.info("endpoint added", extra={"container": cid, "pod": f"{namespace}/{pod}",
                                          "address": str(rec.address), "kind": kind})
        return self._result(rec, netns)

    def _result(self, rec: EndpointRecord, netns: str) -> dict[str, Any]:
        return {
            "interfaces": [{"name": rec.host_ifname, "mac": rec.host_mac},
                           {"name": rec.ifname, "mac": rec.pod_mac, "sandbox": netns}],
            "ips": [{"address": f"{rec.address}/32", "gateway": str(self.gateway),
                     "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": str(self.gateway)}],
            "dns": {},
        }

    async def _plumb(self, rec: EndpointRecord, *, create: bool) -> None:
        """Bring one endpoint to its desired state. ``create``: a new attachment (ADD),
        set up straight away; otherwise (restore) every step checks first and repairs
        only what differs, so working pods are not touched."""
        if create:
            await self._create(rec)
            return
        idx = await self._restore_links(rec)
        await self._restore_bpf(rec, idx)

    async def _restore_links(self, rec: EndpointRecord) -> int:
        """Restore, part 1 (needs no eBPF): veth, pod side, host neighbour."""
        idx = await self.net.link_index(rec.host_ifname)
        if idx is None:
            idx = await self.net.create_veth(rec.host_ifname, rec.netns, rec.ifname)
            log.info("veth created", extra={"host_ifname": rec.host_ifname})
        self._ifindex[rec.host_ifname] = idx
        host_mac, up = await self.net.link_info(idx)
        if not up:
            await self.net.set_up(idx)
        pod = await self.net.pod_link(rec.netns, rec.ifname, self.gateway)
        if pod is None:
            raise NetlinkFailure(f"{rec.ifname} missing in {rec.netns}")
        if pod.up and str(rec.address) in pod.addresses and rec.host_mac == host_mac \
                and pod.routes_ok:
            pod_mac = pod.mac
        else:
            log.info("repairing pod side", extra={"host_ifname": rec.host_ifname})
            pod_mac = await self.net.configure_pod(rec.netns, rec.ifname, rec.address,
                                                   self.gateway, host_mac)
        if await self.net.neigh_mac(idx, rec.address) != pod_mac:
            await self.net.ensure_neigh(idx, rec.address, pod_mac)
        if (rec.host_mac, rec.pod_mac) != (host_mac, pod_mac):
            rec.host_mac, rec.pod_mac = host_mac, pod_mac
            self.store.put(rec)
        # Host routes are repaired by the route sync that follows a restore.
        return idx

    async def _restore_bpf(self, rec: EndpointRecord, idx: int) -> None:
        """Restore, part 2: the endpoint map entry and the anti-spoofing filter."""
        if endpoints_map.read(self.prog, idx) != (rec.address, rec.fenced):
            endpoints_map.write(self.prog, idx, rec.address, fenced=rec.fenced)
        filters = await self.net.filters(idx)
        if not any(f.prio == PRIO_ANTISPOOF and f.name.startswith(self.prog.name)
                   for f in filters):
            await self.net.ensure_clsact(idx)
            await self.net.attach_bpf(idx, self.prog.fd, self.prog.name, PRIO_ANTISPOOF)
            log.info("anti-spoofing re-attached", extra={"host_ifname": rec.host_ifname})

    async def _create(self, rec: EndpointRecord) -> None:
        idx = await self.net.create_veth(rec.host_ifname, rec.netns, rec.ifname)
        self._ifindex[rec.host_ifname] = idx
        host_mac, _ = await self.net.link_info(idx)
        await self.net.set_up(idx)
        pod_mac = await self.net.configure_pod(rec.netns, rec.ifname, rec.address,
                                               self.gateway, host_mac)
        await self.net.ensure_neigh(idx, rec.address, pod_mac)
        rec.host_mac, rec.pod_mac = host_mac, pod_mac
        # The map entry before the filter: the program drops packets of unknown endpoints.
        endpoints_map.write(self.prog, idx, rec.address, fenced=rec.fenced)
        await self.net.ensure_clsact(idx)
        await self.net.attach_bpf(idx, self.prog.fd, self.prog.name, PRIO_ANTISPOOF)
        self.store.put(rec)
        await self.net.apply_route("replace", routing.Route(
            ipaddress.IPv4Network(f"{rec.address}/32"), "dev", rec.host_ifname),
            {rec.host_ifname: idx})

    async def _unplumb(self, rec: EndpointRecord) -> None:
        idx = await self.net.link_index(rec.host_ifname)
        if idx is not None:
            self._forget_endpoint(idx)
        await self.net.delete_link(rec.host_ifname)  # takes routes, neighbours, filters along
        self._ifindex.pop(rec.host_ifname, None)

    def _forget_endpoint(self, idx: int) -> None:
        endpoints_map.remove(self.prog, idx)
        ep_counters.remove(self.prog, idx)

    async def _release(self, rec: EndpointRecord) -> None:
        if rec.kind == "ephemeral":
            await self.ipam.release(pool=rec.pool, owner=OwnerKey(rec.owner))
        else:
            key = ReservationKey.parse(rec.owner)
            with contextlib.suppress(IpamError):
                await self.ipam.unbind(key, pool=rec.pool, holder=rec.pod_uid)

    async def cni_del(self, req: dict[str, Any]) -> None:
        cid, ifname = self._ids(req)
        rec = self.store.get(cid, ifname)
        if rec is None:
            # Unknown to us (never added, already deleted, or state lost): still free
            # an ephemeral lease and a leftover veth so DEL stays idempotent.
            await self.net.delete_link(host_ifname(self.s.host_prefix, cid, ifname))
            owner = ephemeral_owner(cid, ifname)
            for spec in await self.ipam.pool_specs():
                await self.ipam.release(pool=spec.name, owner=owner)
            return
        idx = self._ifindex.get(rec.host_ifname) or await self.net.link_index(rec.host_ifname)
        for hook in self.hooks:
            try:
                await hook.endpoint_removed(rec.endpoint(idx or 0))
            except Exception:
                log.exception("hook failed on delete", extra={"container": cid})
        await self._unplumb(rec)  # the link's /32 dev route goes with it
        await self._release(rec)
        self.store.delete(rec)
        self._last_desired = None  # next sync diffs the kernel in full
        log.info("endpoint deleted", extra={"container": cid, "address": str(rec.address)})

    async def cni_check(self, req: dict[str, Any]) -> None:
        cid, ifname = self._ids(req)
        rec = self.store.get(cid, ifname)
        if rec is None:
            raise UnknownContainer(f"no attachment {cid}/{ifname} on this node")
        prev = (req.get("config") or {}).get("prevResult") or {}
        ips = [ip.get("address", "") for ip in prev.get("ips", []) if isinstance(ip, dict)]
        if ips and f"{rec.address}/32" not in ips:
            raise CheckFailed(f"prevResult addresses {ips} differ from {rec.address}/32")
        idx = await self.net.link_index(rec.host_ifname)
        if idx is None:
            raise CheckFailed(f"host veth {rec.host_ifname} is missing")
        pod = await self.net.pod_link(rec.netns, rec.ifname)
        if pod is None or str(rec.address) not in pod.addresses or not pod.up:
            raise CheckFailed(f"{rec.ifname} in {rec.netns} lacks {rec.address}/32 or is down")
        if not await self.net.pod_routes_ok(rec.netns, rec.ifname, self.gateway):
            raise CheckFailed(f"default route via {self.gateway} missing in {rec.netns}")
        if not any(f.prio == PRIO_ANTISPOOF for f in await self.net.filters(idx)):
            raise CheckFailed(f"anti-spoofing filter missing on {rec.host_ifname}")
        if rec.fenced:
            raise CheckFailed(f"{rec.address} is fenced: IPAM re-homed it to another node")

    async def cni_gc(self, req: dict[str, Any]) -> dict[str, Any]:
        conf = req.get("config") or {}
        raw = conf.get("cni.dev/valid-attachments", conf.get("cni.dev/attachments"))
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise InvalidConfig("cni.dev/valid-attachments must be a list")
        valid = set()
        for a in raw:
            if not isinstance(a, dict) or "containerID" not in a or "ifname" not in a:
                raise InvalidConfig("each valid attachment needs containerID and ifname")
            valid.add((str(a["containerID"]), str(a["ifname"])))
        removed = []
        for rec in list(self.store.all()):
            if rec.key not in valid:
                await self.cni_del({"containerId": rec.container_id, "ifname": rec.ifname})
                removed.append(f"{rec.container_id}/{rec.ifname}")
        valid_owners = {f"eph/{c}/{i}" for c, i in valid}
        for spec in await self.ipam.pool_specs():
            for lease in await self.ipam.all_records(spec.name):
                if lease.kind is LeaseKind.EPHEMERAL and lease.node == self.node \
                        and lease.owner not in valid_owners:
                    await self.ipam.release(pool=spec.name, owner=lease.owner)
                    removed.append(str(lease.owner))
        log.info("gc", extra={"removed": removed})
        return {"removed": removed}

    # --------------------------------------------------------------- restore

    async def restore(self, loading: Awaitable[None] | None = None) -> None:
        """Diff the recorded endpoints against the kernel and repair what differs.
        ``loading`` (the eBPF compile, in a thread) overlaps the link checks."""
        records = self.store.load()
        live: list[EndpointRecord] = []
        for rec in records:
            if netns_exists(rec.netns):
                live.append(rec)
                continue
            log.info("pod netns gone, removing endpoint", extra={"netns": rec.netns})
            await self.net.delete_link(rec.host_ifname)
            with contextlib.suppress(IpamError):
                await self._release(rec)
            self.store.delete(rec)

        async def links(rec: EndpointRecord) -> tuple[EndpointRecord, int] | None:
            try:
                return rec, await self._restore_links(rec)
            except DatapathError:
                log.exception("cannot restore endpoint", extra={"container": rec.container_id})
                return None

        done = await self.ipam.gather_limited([links(r) for r in live], limit=8)
        if loading is not None:
            await loading
        kept: list[EndpointRecord] = []
        for item in done:
            if item is None:
                continue
            try:
                await self._restore_bpf(*item)
                kept.append(item[0])
            except DatapathError:
                log.exception("cannot restore endpoint", extra={"container": item[0].container_id})
        # Veths of records that failed to restore are kept (and retried next start);
        # only veths nobody recorded are orphans.
        known = {r.host_ifname for r in live}
        names = await self.net.link_names()
        for name in names:
            if name.startswith(self.s.host_prefix) and name not in known \
                    and len(name) == 15:
                log.info("removing orphan veth", extra={"host_ifname": name})
                await self.net.delete_link(name)
        alive = {i for n, i in names.items() if n in known or not n.startswith(self.s.host_prefix)}
        for idx in endpoints_map.read_all(self.prog):
            if idx not in alive:
                self._forget_endpoint(idx)
        eps = [r.endpoint(self._ifindex[r.host_ifname]) for r in kept]
        for hook in self.hooks:
            await hook.resync(eps)

    def endpoints(self) -> list[Endpoint]:
        return [r.endpoint(self._ifindex.get(r.host_ifname, 0)) for r in self.store.all()]

    def drop_counters(self) -> dict[str, dict[str, int]]:
        by_idx = {i: n for n, i in self._ifindex.items()}
        return {by_idx.get(i, f"#{i}"): c for i, c in ep_counters.read_all(self.prog).items()
                if i in by_idx}

    # --------------------------------------------------------------- routing

    async def sync_routes(self, *, force: bool = False) -> None:
        view = await self.ipam.routing_view()
        self._view = view
        peers = await self.nodes.addresses()
        locals_ = [routing.LocalEndpoint(r.address, r.host_ifname, r.fenced)
                   for r in self.store.all()]
        for ep in routing.to_fence(self.node, view, locals_):
            await self._fence(ep.address)
        locals_ = [routing.LocalEndpoint(r.address, r.host_ifname, r.fenced)
                   for r in self.store.all()]
        desired = routing.desired_routes(node=self.node, view=view, endpoints=locals_,
                                         peers=peers, mode=self.s.routing)
        now = time.monotonic()
        plan: routing.RoutePlan | None = None
        if force or self._last_desired is None \
                or now - self._last_full > self.s.full_resync_interval:
            names = {i: n for n, i in self._ifindex.items()}
            plan = routing.diff(desired, await self.net.routes(names))
            self._last_full = now
        elif desired != self._last_desired:
            # The kernel matched the last desired set (full diffs repair drift): apply
            # only the change, without dumping every route of a busy node.
            plan = routing.diff(desired, self._last_desired)
        if plan is not None and not plan.empty():
            for r in plan.delete:
                await self.net.apply_route("del", r, self._ifindex)
            for r in plan.replace + plan.add:
                await self.net.apply_route("replace", r, self._ifindex)
            self.metrics.route_ops.labels("delete").inc(len(plan.delete))
            self.metrics.route_ops.labels("replace").inc(len(plan.replace))
            self.metrics.route_ops.labels("add").inc(len(plan.add))
            log.info("routes synced", extra={"add": len(plan.add),
                                             "replace": len(plan.replace),
                                             "delete": len(plan.delete)})
        self._last_desired = desired
        if self.s.routing == "bgp":
            await self._sync_bird(view, peers)
        self._healthy_sync = True

    async def _sync_bird(self, view: RoutingView, peers: dict[str, str]) -> None:
        blocks, migrated = routing.announced(self.node, view)
        served = {r.address for r in self.store.all() if not r.fenced}
        cfg = bird.config_of(router_id=self.address or "0.0.0.0", asn=self.s.bgp_asn,
                             blocks=blocks, migrated=[a for a in migrated if a in served],
                             peers=peers, self_node=self.node)
        text = bird.render(cfg)
        if text == self._bird_text and self._bird_ok:
            return
        self.bird.write(text)
        self._bird_text = text
        try:
            await self.bird.configure()
            self._bird_ok = True
            self.metrics.bird_reloads.labels("ok").inc()
            log.info("bird reconfigured", extra={"blocks": len(cfg.blocks),
                                                 "migrated": len(cfg.migrated)})
        except DatapathError as e:
            self._bird_ok = False
            self.metrics.bird_reloads.labels("error").inc()
            if str(e) != self._bird_error:
                log.warning("bird reload failed (retrying)", extra={"error": str(e)})
            self._bird_error = str(e)
        else:
            self._bird_error = ""

    async def _fence(self, address: ipaddress.IPv4Address) -> None:
        for rec in self.store.all():
            if rec.address != address or rec.fenced:
                continue
            rec.fenced = True
            idx = self._ifindex.get(rec.host_ifname)
            if idx is not None:
                endpoints_map.write(self.prog, idx, rec.address, fenced=True)
            self.store.put(rec)
            log.warning("address fenced: IPAM re-homed it to another node",
                        extra={"address": str(address), "container": rec.container_id})

    async def check_epochs(self) -> None:
        """Sticky endpoints whose reservation moved on (newer epoch, other home) are
        fenced even when the routing view alone does not show it."""
        for rec in list(self.store.all()):
            if rec.kind != "sticky" or rec.fenced:
                continue
            lease = await self.ipam.lease(pool=rec.pool, owner=OwnerKey(rec.owner))
            if lease is None:
                continue
            if (lease.epoch > rec.epoch and lease.node != self.node) or \
                    lease.address != rec.address:
                await self._fence(rec.address)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.sync_interval)
            try:
                async with self._lock:
                    await self.sync_routes()
            except (DatapathError, IpamError) as e:
                self.metrics.syncs.labels("error").inc()
                if self._healthy_sync:  # log the transition, not every retry
                    log.warning("route sync failed", extra={"error": str(e)})
                self._healthy_sync = False
            else:
                self.metrics.syncs.labels("ok").inc()

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.ipam.heartbeat(self.node)
                if self.address:
                    await self.nodes.publish(self.node, self.address)
                async with self._lock:
                    await self.check_epochs()
                self.metrics.heartbeats.labels("ok").inc()
            except (DatapathError, IpamError) as e:
                self.metrics.heartbeats.labels("error").inc()
                log.warning("heartbeat failed", extra={"error": str(e)})
            await asyncio.sleep(self.s.heartbeat_interval)

