"""The agent's endpoints: pod attachments set up (CNI ADD), torn down (DEL),
verified (CHECK), collected (GC), fenced, and restored against the kernel at
start-up. Every change goes through the netlink, program and record interfaces of
:mod:`datapath.interfaces`."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from datapath import leases, routing
from datapath.config import AgentSettings
from datapath.errors import (
    AddressConflict,
    CheckFailed,
    DatapathError,
    InterfaceExists,
    InvalidConfig,
    InvalidEnvironment,
    NetlinkFailure,
    NotHome,
    TryAgain,
    UnknownContainer,
)
from datapath.hooks import PRIO_ANTISPOOF, Endpoint, EndpointHook
from datapath.interfaces import AddressProber, EndpointProgram, EndpointRecords, NetlinkOps
from datapath.maps import endpoints as endpoints_map
from datapath.maps import ep_counters
from datapath.models import EndpointRecord, host_ifname
from datapath.podinfo import PodLookup
from datapath.probe import Conflict
from ipam import (
    InvalidRequest,
    IpamError,
    LeaseKind,
    OwnerKey,
    RedisIpam,
    ReservationKey,
    ephemeral_owner,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger("stickyip.datapath")


class EndpointManager:
    """Pod attachments of this node, from CNI request to kernel state and back."""

    def __init__(self, settings: AgentSettings, ipam: RedisIpam, *, netlink: NetlinkOps,
                 program: EndpointProgram, records: EndpointRecords, pods: PodLookup,
                 prober: AddressProber | None = None, hooks: Sequence[EndpointHook] = (),
                 on_removed: Callable[[], None] = lambda: None,
                 on_conflict: Callable[[list[Conflict]], None] = lambda _: None,
                 lock: asyncio.Lock | None = None) -> None:
        self.settings = settings
        self.node = settings.node
        self.ipam = ipam
        self.netlink = netlink
        self.program = program
        self.records = records
        self.pods = pods
        #: conflict detection before ADD, announcements after (None: neither)
        self.prober = prober
        self.hooks = list(hooks)
        #: told of the conflicts that refused an ADD (metrics)
        self.on_conflict = on_conflict
        #: told when an endpoint went away (its /32 route went with its link)
        self.on_removed = on_removed
        self.gateway = ipaddress.IPv4Address(settings.gateway)
        self.gateway6 = ipaddress.IPv6Address(settings.gateway6)
        #: host veth name -> ifindex of every endpoint set up or restored
        self.ifindex: dict[str, int] = {}
        #: the agent's lock, serializing changes to the node; ADD takes it itself (it
        #: lets go while it probes the network), DEL and GC run under it
        self.lock = lock or asyncio.Lock()
        #: attachments an ADD is setting up -> whether a DEL arrived meanwhile
        self._adding: dict[tuple[str, str], bool] = {}

    # ------------------------------------------------------------------ ADD

    async def add(self, req: dict[str, Any]) -> dict[str, Any]:
        """CNI ADD. Under the agent's lock: the checks and the IPAM call. Then the
        conflict probe runs (it waits on the network; many pods starting at once must
        not wait for each other's probes) while, under the lock again, the pod is
        plumbed: veth, addresses, routes, hooks are local to the node, and nothing is
        announced until the probe has passed. A conflict, a failure, or a DEL meanwhile
        undoes every step."""
        cid, ifname = _ids(req)
        async with self.lock:
            if (cid, ifname) in self._adding:
                raise InterfaceExists(f"interface {ifname} of container {cid} is being added")
            rec = await self._prepare(req, cid, ifname)
            self._adding[rec.key] = False
        probe = asyncio.ensure_future(self._no_conflict(rec))
        await asyncio.sleep(0)  # the probe goes out now, not after the plumbing
        try:
            try:
                async with self.lock:
                    if self._adding[rec.key]:
                        raise TryAgain(f"container {cid} was deleted while being added")
                    await self._create(rec)
                    idx = self.ifindex[rec.host_ifname]
                    for hook in self.hooks:
                        await hook.endpoint_added(rec.endpoint(idx))
                await probe
                async with self.lock:
                    if self._adding[rec.key]:
                        raise TryAgain(f"container {cid} was deleted while being added")
                    if self.prober is not None:
                        await self.prober.announce(rec.addresses)
            except BaseException:
                if not probe.done():
                    probe.cancel()
                    await asyncio.gather(probe, return_exceptions=True)
                async with self.lock:
                    await self._undo_add(rec)
                raise
        finally:
            self._adding.pop(rec.key, None)
        log.info("endpoint added", extra={"container": cid,
                                          "pod": f"{rec.namespace}/{rec.pod}",
                                          "address": _text(rec.addresses), "kind": rec.kind})
        return self._result(rec, rec.netns)

    async def _prepare(self, req: dict[str, Any], cid: str, ifname: str) -> EndpointRecord:
        """ADD's checks and its one IPAM call: the record of what is to be set up."""
        netns = str(req.get("netns", ""))
        args = req.get("args") or {}
        namespace, pod = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
        uid = args.get("K8S_POD_UID", "")
        if self.records.get(cid, ifname) is not None:
            raise InterfaceExists(f"interface {ifname} of container {cid} already exists")
        if not netns or not self.netlink.netns_exists(netns):
            raise UnknownContainer(f"network namespace {netns!r} does not exist")
        if await self.netlink.pod_link(netns, ifname) is not None:
            raise InterfaceExists(f"interface {ifname} already exists in {netns}")
        # A host veth named after this attachment without a record is the leftover of an
        # ADD interrupted by an agent crash: remove it so the retry can proceed.
        if await self.netlink.delete_link(host_ifname(self.settings.host_prefix, cid, ifname)):
            log.warning("removed leftover veth of an interrupted ADD", extra={"container": cid})

        sticky = await self.pods(namespace, pod)
        if sticky is not None:
            key, pool = sticky
            found = await self.ipam.reservation(key)
            if found is not None and found.node and found.node != self.node:
                held = ", ".join(str(a) for a in leases.addresses_of(found)) or "no address yet"
                raise NotHome(f"{namespace}/{pod}: reservation {key} ({held}) is "
                              f"homed on node {found.node!r}, not {self.node!r}; the pod "
                              "must run there (or the reservation be re-homed)")
            if pool:
                pools = leases.pool_names(pool, what=f"pool of {namespace}/{pod}")
            elif found is not None and found.pools:
                pools = list(found.pools)
            else:
                pools = self._pools(req)
            lease = await leases.claim(self.ipam, key, pools=pools, node=self.node, holder=uid,
                                       pod=f"{namespace}/{pod}")
            kind = "sticky"
        else:
            lease = await leases.allocate(self.ipam, pools=self._pools(req), node=self.node,
                                          owner=ephemeral_owner(cid, ifname),
                                          pod=f"{namespace}/{pod}" if pod else "", holder=uid)
            kind = "ephemeral"
        addresses = leases.addresses_of(lease)
        if not addresses:
            raise TryAgain(f"IPAM gave {lease.owner} no address")
        return EndpointRecord(
            container_id=cid, ifname=ifname, netns=netns, addresses=list(addresses),
            host_ifname=host_ifname(self.settings.host_prefix, cid, ifname), pool=lease.pool,
            owner=lease.owner, kind=kind, epoch=lease.epoch, namespace=namespace, pod=pod,
            pod_uid=uid)

    async def _no_conflict(self, rec: EndpointRecord) -> None:
        """Refuse to bring up addresses another host on the node's links answers for."""
        if self.prober is None:
            return
        found = await self.prober.probe(rec.addresses)
        if not found:
            return
        self.on_conflict(found)
        where = "; ".join(c.describe() for c in found)
        log.warning("address conflict: ADD refused", extra={
            "container": rec.container_id, "pod": f"{rec.namespace}/{rec.pod}",
            "conflicts": where})
        raise AddressConflict(
            f"address conflict: {where}. Another host on the node's network holds "
            f"{'this address' if len(found) == 1 else 'these addresses'}; pod "
            f"{rec.namespace}/{rec.pod} was not started. Remove the other holder, or "
            "exclude the address from its pool", details=where)

    def _pools(self, req: dict[str, Any]) -> list[str]:
        """The pools of an ephemeral address: the network config's ``pool`` (one name,
        or one IPv4 and one IPv6 pool separated by a comma), else the agent's."""
        conf = req.get("config") or {}
        pool = (conf.get("pool") or (conf.get("ipam") or {}).get("pool")
                or self.settings.default_pool)
        if not isinstance(pool, str):
            raise InvalidConfig("'pool' must be a string (a pool, or two separated by a comma)")
        return leases.pool_names(pool)

    def _gateways(self, rec: EndpointRecord) -> list[IPAddress]:
        """The pod's gateway of each family it has an address of."""
        return [self.gateway if a.version == 4 else self.gateway6 for a in rec.addresses]

    async def _create(self, rec: EndpointRecord) -> None:
        """Set up a new attachment, step by step (:meth:`_undo_add` undoes any prefix)."""
        idx = await self.netlink.create_veth(rec.host_ifname, rec.netns, rec.ifname)
        self.ifindex[rec.host_ifname] = idx
        host_mac, _ = await self.netlink.link_info(idx)
        if rec.address_of(6) is not None:
            await self.netlink.add_gateway(idx, self.gateway6)
        await self.netlink.set_up(idx)
        pod_mac = await self.netlink.configure_pod(rec.netns, rec.ifname, rec.addresses,
                                                   self._gateways(rec), host_mac)
        for address in rec.addresses:
            await self.netlink.ensure_neigh(idx, address, pod_mac)
        rec.host_mac, rec.pod_mac = host_mac, pod_mac
        # The map entry before the filter: the program drops packets of unknown endpoints.
        endpoints_map.write(self.program, idx, rec.addresses, fenced=rec.fenced)
        await self.netlink.ensure_clsact(idx)
        await self.netlink.attach_bpf(idx, self.program.fd, self.program.name, PRIO_ANTISPOOF)
        self.records.put(rec)
        for route in _dev_routes(rec):
            await self.netlink.apply_route("replace", route, {rec.host_ifname: idx})

    async def _undo_add(self, rec: EndpointRecord) -> None:
        """Undo whatever part of an ADD was done; each step is tried even when an
        earlier one fails, so a lease is never left behind by a broken link."""
        ep = rec.endpoint(self.ifindex.get(rec.host_ifname, 0))
        for hook in self.hooks:  # undo what hooks may have set up for it
            with contextlib.suppress(Exception):
                await hook.endpoint_removed(ep)
        steps: tuple[Callable[[], Awaitable[None]], ...] = (
            lambda: self._unplumb(rec), lambda: self._release(rec), lambda: self._forget(rec))
        for step in steps:
            try:
                await step()
            except Exception:
                log.exception("cannot undo part of a failed ADD",
                              extra={"container": rec.container_id})

    async def _forget(self, rec: EndpointRecord) -> None:
        self.records.delete(rec)

    def _result(self, rec: EndpointRecord, netns: str) -> dict[str, Any]:
        """The CNI result: one ``ips`` entry and one default route per family."""
        gateways = self._gateways(rec)
        return {
            "interfaces": [{"name": rec.host_ifname, "mac": rec.host_mac},
                           {"name": rec.ifname, "mac": rec.pod_mac, "sandbox": netns}],
            "ips": [{"address": _cidr(a), "gateway": str(gw), "interface": 1}
                    for a, gw in zip(rec.addresses, gateways, strict=True)],
            "routes": [{"dst": "0.0.0.0/0" if gw.version == 4 else "::/0", "gw": str(gw)}
                       for gw in gateways],
            "dns": {},
        }

    # ------------------------------------------------------------------ DEL

    async def delete(self, req: dict[str, Any]) -> None:
        """CNI DEL (run under the agent's lock)."""
        cid, ifname = _ids(req)
        if (cid, ifname) in self._adding:
            self._adding[(cid, ifname)] = True  # the ADD undoes itself after its probe
        rec = self.records.get(cid, ifname)
        if rec is None:
            # Unknown to us (never added, already deleted, or state lost): still free
            # an ephemeral lease and a leftover veth so DEL stays idempotent.
            await self.netlink.delete_link(host_ifname(self.settings.host_prefix, cid, ifname))
            await leases.release(self.ipam, ephemeral_owner(cid, ifname))
            return
        idx = self.ifindex.get(rec.host_ifname) or await self.netlink.link_index(rec.host_ifname)
        for hook in self.hooks:
            try:
                await hook.endpoint_removed(rec.endpoint(idx or 0))
            except Exception:
                log.exception("hook failed on delete", extra={"container": cid})
        await self._unplumb(rec)  # the link's /32 dev route goes with it
        await self._release(rec)
        self.records.delete(rec)
        self.on_removed()
        log.info("endpoint deleted", extra={"container": cid,
                                            "address": _text(rec.addresses)})

    async def _unplumb(self, rec: EndpointRecord) -> None:
        idx = await self.netlink.link_index(rec.host_ifname)
        if idx is not None:
            self._forget_map_entries(idx)
        await self.netlink.delete_link(rec.host_ifname)  # takes routes, neighbours, filters
        self.ifindex.pop(rec.host_ifname, None)

    def _forget_map_entries(self, idx: int) -> None:
        endpoints_map.remove(self.program, idx)
        ep_counters.remove(self.program, idx)

    async def _release(self, rec: EndpointRecord) -> None:
        if rec.kind == "ephemeral":
            await leases.release(self.ipam, OwnerKey(rec.owner))
        else:
            key = ReservationKey.parse(rec.owner)
            with contextlib.suppress(IpamError):
                await leases.unbind(self.ipam, key, holder=rec.pod_uid)

    # ---------------------------------------------------------------- CHECK

    async def check(self, req: dict[str, Any]) -> None:
        cid, ifname = _ids(req)
        rec = self.records.get(cid, ifname)
        if rec is None:
            raise UnknownContainer(f"no attachment {cid}/{ifname} on this node")
        prev = (req.get("config") or {}).get("prevResult") or {}
        ips = [ip.get("address", "") for ip in prev.get("ips", []) if isinstance(ip, dict)]
        want = [_cidr(a) for a in rec.addresses]
        if ips and sorted(ips) != sorted(want):
            raise CheckFailed(f"prevResult addresses {ips} differ from {want}")
        idx = await self.netlink.link_index(rec.host_ifname)
        if idx is None:
            raise CheckFailed(f"host veth {rec.host_ifname} is missing")
        pod = await self.netlink.pod_link(rec.netns, rec.ifname)
        if pod is None or not pod.up or any(str(a) not in pod.addresses for a in rec.addresses):
            raise CheckFailed(f"{rec.ifname} in {rec.netns} lacks {', '.join(want)} or is down")
        gateways = self._gateways(rec)
        if not await self.netlink.pod_routes_ok(rec.netns, rec.ifname, gateways):
            raise CheckFailed(f"default route via {_text(gateways)} missing in {rec.netns}")
        if not any(f.prio == PRIO_ANTISPOOF for f in await self.netlink.filters(idx)):
            raise CheckFailed(f"anti-spoofing filter missing on {rec.host_ifname}")
        if rec.fenced:
            raise CheckFailed(f"{_text(rec.addresses)} fenced: IPAM re-homed it to another node")

    # ------------------------------------------------------------------- GC

    async def gc(self, req: dict[str, Any]) -> dict[str, Any]:
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
        for rec in list(self.records.all()):
            if rec.key not in valid and rec.key not in self._adding:  # not an ADD's
                await self.delete({"containerId": rec.container_id, "ifname": rec.ifname})
                removed.append(f"{rec.container_id}/{rec.ifname}")
        # an ADD still in progress has a lease (and maybe a record): not a leak
        valid_owners = {f"eph/{c}/{i}" for c, i in valid | set(self._adding)}
        seen: set[str] = set()
        for spec in await self.ipam.pool_specs():
            for lease in await self.ipam.all_records(spec.name):
                if lease.kind is LeaseKind.EPHEMERAL and lease.node == self.node \
                        and lease.owner not in valid_owners and lease.owner not in seen:
                    seen.add(lease.owner)  # a dual-stack lease draws on two pools
                    await leases.release(self.ipam, lease.owner)
                    removed.append(str(lease.owner))
        log.info("gc", extra={"removed": removed})
        return {"removed": removed}

    # -------------------------------------------------------------- fencing

    def fence(self, address: IPAddress) -> None:
        """Stop serving ``address``: the endpoints holding it (with all their addresses:
        a re-home moves both families) drop everything their pod sends and are recorded
        as fenced (their routes are withdrawn by the next route sync)."""
        for rec in self.records.all():
            if address not in rec.addresses or rec.fenced:
                continue
            rec.fenced = True
            idx = self.ifindex.get(rec.host_ifname)
            if idx is not None:
                endpoints_map.write(self.program, idx, rec.addresses, fenced=True)
            self.records.put(rec)
            log.warning("address fenced: IPAM re-homed it to another node",
                        extra={"address": str(address), "container": rec.container_id})

    def local(self) -> list[routing.LocalEndpoint]:
        """What routing and fencing decisions need of each endpoint."""
        return [routing.LocalEndpoint(tuple(r.addresses), r.host_ifname, r.fenced,
                                      owner=r.owner if r.kind == "sticky" else "",
                                      epoch=r.epoch)
                for r in self.records.all()]

    # -------------------------------------------------------------- restore

    async def restore(self, loading: Awaitable[None] | None = None) -> None:
        """Diff the recorded endpoints against the kernel and repair what differs.
        ``loading`` (the eBPF compile, in a thread) overlaps the link checks."""
        records = self.records.load()
        live: list[EndpointRecord] = []
        for rec in records:
            if self.netlink.netns_exists(rec.netns):
                live.append(rec)
                continue
            log.info("pod netns gone, removing endpoint", extra={"netns": rec.netns})
            await self.netlink.delete_link(rec.host_ifname)
            with contextlib.suppress(IpamError):
                await self._release(rec)
            self.records.delete(rec)

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
        prefix = self.settings.host_prefix
        known = {r.host_ifname for r in live}
        names = await self.netlink.link_names()
        for name in names:
            if name.startswith(prefix) and name not in known and len(name) == 15:
                log.info("removing orphan veth", extra={"host_ifname": name})
                await self.netlink.delete_link(name)
        alive = {i for n, i in names.items() if n in known or not n.startswith(prefix)}
        for idx in endpoints_map.read_all(self.program):
            if idx not in alive:
                self._forget_map_entries(idx)
        eps = [r.endpoint(self.ifindex[r.host_ifname]) for r in kept]
        for hook in self.hooks:
            await hook.resync(eps)

    async def _restore_links(self, rec: EndpointRecord) -> int:
        """Restore, part 1 (needs no eBPF): veth, pod side, host neighbour."""
        idx = await self.netlink.link_index(rec.host_ifname)
        if idx is None:
            idx = await self.netlink.create_veth(rec.host_ifname, rec.netns, rec.ifname)
            log.info("veth created", extra={"host_ifname": rec.host_ifname})
        self.ifindex[rec.host_ifname] = idx
        host_mac, up = await self.netlink.link_info(idx)
        if not up:
            await self.netlink.set_up(idx)
        if rec.address_of(6) is not None:
            await self.netlink.add_gateway(idx, self.gateway6)
        gateways = self._gateways(rec)
        pod = await self.netlink.pod_link(rec.netns, rec.ifname, gateways)
        if pod is None:
            raise NetlinkFailure(f"{rec.ifname} missing in {rec.netns}")
        if pod.up and all(str(a) in pod.addresses for a in rec.addresses) \
                and rec.host_mac == host_mac and pod.routes_ok:
            pod_mac = pod.mac
        else:
            log.info("repairing pod side", extra={"host_ifname": rec.host_ifname})
            pod_mac = await self.netlink.configure_pod(rec.netns, rec.ifname, rec.addresses,
                                                       gateways, host_mac)
        for address in rec.addresses:
            if await self.netlink.neigh_mac(idx, address) != pod_mac:
                await self.netlink.ensure_neigh(idx, address, pod_mac)
        if (rec.host_mac, rec.pod_mac) != (host_mac, pod_mac):
            rec.host_mac, rec.pod_mac = host_mac, pod_mac
            self.records.put(rec)
        # Host routes are repaired by the route sync that follows a restore.
        return idx

    async def _restore_bpf(self, rec: EndpointRecord, idx: int) -> None:
        """Restore, part 2: the endpoint map entry and the anti-spoofing filter (replaced
        when it runs another program than the one just loaded: after an upgrade the old
        program would keep reading maps this agent no longer writes)."""
        if endpoints_map.read(self.program, idx) != (tuple(rec.addresses), rec.fenced):
            endpoints_map.write(self.program, idx, rec.addresses, fenced=rec.fenced)
        filters = await self.netlink.filters(idx)
        if not any(f.prio == PRIO_ANTISPOOF and f.name == self.program.name for f in filters):
            await self.netlink.ensure_clsact(idx)
            await self.netlink.attach_bpf(idx, self.program.fd, self.program.name,
                                          PRIO_ANTISPOOF)
            log.info("anti-spoofing re-attached", extra={"host_ifname": rec.host_ifname})

    # ---------------------------------------------------------------- views

    def endpoints(self) -> list[Endpoint]:
        return [r.endpoint(self.ifindex.get(r.host_ifname, 0)) for r in self.records.all()]

    def drop_counters(self) -> dict[str, dict[str, int]]:
        """Anti-spoofing drops per host veth name."""
        by_idx = {i: n for n, i in self.ifindex.items()}
        return {by_idx[i]: c for i, c in ep_counters.read_all(self.program).items()
                if i in by_idx}


def _ids(req: dict[str, Any]) -> tuple[str, str]:
    cid, ifname = str(req.get("containerId", "")), str(req.get("ifname", ""))
    try:
        ephemeral_owner(cid, ifname)
    except InvalidRequest as e:
        raise InvalidEnvironment(str(e)) from e
    return cid, ifname


def _dev_routes(rec: EndpointRecord) -> list[routing.Route]:
    return [routing.Route(routing.host_network(a), "dev", rec.host_ifname)
            for a in rec.addresses]


def _cidr(address: IPAddress) -> str:
    return f"{address}/{address.max_prefixlen}"


def _text(addresses: Sequence[object]) -> str:
    return ", ".join(str(a) for a in addresses)
