"""Pure planning of service map entries: stable ids, the entries of one Service
port, and the operations turning the entries of one Service into its new ones (so a
change touches only that Service's entries)."""

from __future__ import annotations

from collections.abc import Hashable

from datapath.features.services.maglev import maglev_table
from datapath.features.services.models import ServicePort
from datapath.maps import fields, lb_backends, lb_maglev, lb_services, lb_slots
from datapath.maps.state import Key, MapState, Value

#: upserts in this order (backends before the slots that name them, slots before the
#: service that counts them); deletes in the reverse order. Frontends and backends of
#: IPv6 service ports go to the IPv6 maps; slots and Maglev tables are keyed by ids.
MAP_ORDER = (lb_backends.NAME, lb_backends.NAME6, lb_slots.NAME, lb_maglev.NAME,
             lb_services.NAME, lb_services.NAME6)


class IdAllocator:
    """Stable non-zero ids for hashable keys; ids are not reused until 2**32 wraps, so a
    conntrack entry naming a removed backend never lands on another one."""

    def __init__(self) -> None:
        self._ids: dict[Hashable, int] = {}
        self._next = 1

    def get(self, key: Hashable) -> int:
        if key not in self._ids:
            self._ids[key] = self._next
            self._next = self._next % 0xFFFFFFFF + 1
        return self._ids[key]

    def release(self, key: Hashable) -> None:
        self._ids.pop(key, None)

    def __len__(self) -> int:
        return len(self._ids)


def port_entries(sp: ServicePort, *, svc_ids: IdAllocator, backend_ids: IdAllocator,
                 maglev_m: int = lb_maglev.MAGLEV_M) -> MapState:
    proto = fields.PROTO_NUMBERS[sp.protocol]
    svc_id = svc_ids.get(sp.key)
    flags = (lb_services.F_AFFINITY if sp.affinity_timeout_s else 0) | (
        lb_services.F_MAGLEV if sp.maglev else 0)
    bids = [backend_ids.get((sp.key, b.address, b.port)) for b in sp.backends]
    addr = fields.be32 if sp.family == 4 else fields.be128
    backends: dict[Key, Value] = {
        (bid,): (addr(b.address), fields.be16(b.port), proto, 0)  # type: ignore[arg-type]
        for bid, b in zip(bids, sp.backends, strict=True)}
    slots: dict[Key, Value] = {(svc_id, i + 1): (bid,) for i, bid in enumerate(bids)}
    maglev: dict[Key, Value] = {}
    if sp.maglev and bids:
        table = maglev_table([f"{b.address}:{b.port}" for b in sp.backends], maglev_m)
        maglev = {(svc_id, j): (bids[i],) for j, i in enumerate(table)}
    svc: dict[Key, Value] = {
        (addr(f.address), fields.be16(f.port), proto, 0):  # type: ignore[arg-type]
            (svc_id, len(bids), flags, sp.affinity_timeout_s, 0)
        for f in sp.frontends}
    v6 = sp.family == 6
    return {lb_backends.NAME6 if v6 else lb_backends.NAME: backends, lb_slots.NAME: slots,
            lb_maglev.NAME: maglev, lb_services.NAME6 if v6 else lb_services.NAME: svc}


def service_entries(ports: list[ServicePort], *, svc_ids: IdAllocator,
                    backend_ids: IdAllocator) -> MapState:
    out: MapState = {name: {} for name in MAP_ORDER}
    for sp in ports:
        for name, entries in port_entries(sp, svc_ids=svc_ids, backend_ids=backend_ids).items():
            out[name].update(entries)
    return out
