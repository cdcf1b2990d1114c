"""Keeps the service maps equal to the Services and EndpointSlices it is told about:
each change recomputes the entries of the one Service it concerns and writes only
the difference (upserts in dependency order, then deletes). Also the endpoint hook
that attaches the service program to pod veths."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from datapath.features.services.models import ServiceKey, ServicePort
from datapath.features.services.plan import MAP_ORDER, IdAllocator, service_entries
from datapath.features.services.translate import (
    EndpointSliceObject,
    ServiceObject,
    service_key,
    translate,
)
from datapath.maps.state import MapOps, MapState, MapWriter, apply, diff

log = logging.getLogger("stickyip.datapath.features.services")


@dataclass(frozen=True, slots=True)
class SyncResult:
    service: ServiceKey
    ops: int


class ServiceManager:
    """Desired service state per Service, applied through a :class:`MapWriter`."""

    def __init__(self, writer: MapWriter, *, node_name: str,
                 node_addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
                 default_maglev: bool = False
                 ) -> None:
        self.writer = writer
        self.node_name = node_name
        self.node_addresses = node_addresses
        self.default_maglev = default_maglev
        self.services: dict[ServiceKey, ServiceObject] = {}
        self.slices: dict[ServiceKey, dict[str, EndpointSliceObject]] = {}
        self.applied: dict[ServiceKey, MapState] = {}
        self.ports: dict[ServiceKey, list[ServicePort]] = {}
        self.svc_ids = IdAllocator()
        self.backend_ids = IdAllocator()

    # ------------------------------------------------------------ events

    def set_service(self, obj: ServiceObject) -> SyncResult:
        key = service_key(obj)
        self.services[key] = obj
        return self.sync(key)

    def delete_service(self, key: ServiceKey) -> SyncResult:
        self.services.pop(key, None)
        return self.sync(key)

    def set_slice(self, obj: EndpointSliceObject) -> SyncResult:
        key = service_key(obj)
        self.slices.setdefault(key, {})[obj.get("metadata", {}).get("name", "")] = obj
        return self.sync(key)

    def delete_slice(self, obj: EndpointSliceObject) -> SyncResult:
        key = service_key(obj)
        self.slices.get(key, {}).pop(obj.get("metadata", {}).get("name", ""), None)
        return self.sync(key)

    # ------------------------------------------------------------ sync

    def desired(self, key: ServiceKey) -> tuple[list[ServicePort], MapState]:
        svc = self.services.get(key)
        if svc is None:
            return [], {}
        ports = translate(svc, list(self.slices.get(key, {}).values()),
                          node_name=self.node_name, node_addresses=self.node_addresses,
                          default_maglev=self.default_maglev)
        return ports, service_entries(ports, svc_ids=self.svc_ids, backend_ids=self.backend_ids)

    def sync(self, key: ServiceKey) -> SyncResult:
        """Write the difference between what is applied for ``key`` and what should be."""
        ports, new = self.desired(key)
        old = self.applied.get(key, {})
        ops = diff(old, new, order=MAP_ORDER)
        apply(self.writer, ops)
        self._forget_ids(key, self.ports.get(key, []), ports)
        if new:
            self.applied[key] = new
            self.ports[key] = ports
        else:
            self.applied.pop(key, None)
            self.ports.pop(key, None)
        if ops:
            log.debug("service %s: %d map writes", key, len(ops))
        return SyncResult(key, len(ops))

    def _forget_ids(self, key: ServiceKey, old: list[ServicePort], new: list[ServicePort]
                    ) -> None:
        keep_ports = {p.key for p in new}
        keep_backends = {(p.key, b.address, b.port) for p in new for b in p.backends}
        for p in old:
            if p.key not in keep_ports:
                self.svc_ids.release(p.key)
            for b in p.backends:
                if (p.key, b.address, b.port) not in keep_backends:
                    self.backend_ids.release((p.key, b.address, b.port))

    def reconcile(self) -> MapOps:
        """Make the maps equal to the whole desired state (after a restart: entries
        left by a previous agent are rewritten or removed, none are left behind)."""
        actual: MapState = {name: dict(self.writer.items(name)) for name in MAP_ORDER}
        desired: MapState = {name: {} for name in MAP_ORDER}
        for state in self.applied.values():
            for name, entries in state.items():
                desired[name].update(entries)
        ops = diff(actual, desired, order=MAP_ORDER)
        apply(self.writer, ops)
        return ops
