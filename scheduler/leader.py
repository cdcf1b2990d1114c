"""Leader election with a ``coordination.k8s.io/v1`` Lease, as client-go does it:
a replica takes the Lease only after seeing it unchanged for a whole lease
duration, and a leader stops acting before that duration passes without a
successful renewal, so two replicas never act as leader at the same time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from plumbing.kube.errors import Conflict, KubeError
from scheduler.kubeapi import KubeApi, now_rfc3339

log = logging.getLogger("stickyip.scheduler.leader")


class LeaderElector:
    def __init__(self, kube: KubeApi, *, namespace: str, name: str, identity: str,
                 duration: float, renew_period: float,
                 on_change: Callable[[bool], None] | None = None,
                 on_renew: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kube, self.namespace, self.name, self.identity = kube, namespace, name, identity
        self.duration, self.renew_period = duration, renew_period
        self.on_change = on_change
        #: Called after every successful acquire or renewal (a leader whose renewal was
        #: late stopped acting meanwhile; this lets it pick up what it set aside).
        self.on_renew = on_renew
        self.clock = clock
        self._renewed_at = -1e18
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self._leading = False

    @property
    def is_leader(self) -> bool:
        # Stop acting at two thirds of the duration without a renewal (client-go's
        # renew deadline), well before another replica may take over.
        return self._leading and self.clock() - self._renewed_at < self.duration * 2 / 3

    def _set(self, leading: bool) -> None:
        if leading != self._leading:
            self._leading = leading
            log.info("leadership changed", extra={"leader": leading, "identity": self.identity})
            if self.on_change is not None:
                self.on_change(leading)

    def _body(self, transitions: int, acquired: str, rv: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if rv is not None:
            meta["resourceVersion"] = rv
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": self.identity,
                         "leaseDurationSeconds": max(1, round(self.duration)),
                         "acquireTime": acquired, "renewTime": now_rfc3339(micro=True),
                         "leaseTransitions": transitions}}

    def try_acquire_or_renew(self) -> bool:
        """One round (blocking). True while this replica leads."""
        now = self.clock()
        lease = self.kube.get_lease(self.namespace, self.name)
        if lease is None:
            try:
                self.kube.create_lease(self.namespace, self._body(0, now_rfc3339(True), None))
            except Conflict:
                return False
            self._renewed_at = now
            return True
        spec = lease.get("spec") or {}
        meta = lease.get("metadata") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime", "")))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            acquired = spec.get("acquireTime") or now_rfc3339(True)
        else:
            duration = float(spec.get("leaseDurationSeconds") or self.duration)
            if holder and now - self._observed_at < duration:
                return False
            transitions += 1
            acquired = now_rfc3339(True)
        try:
            self.kube.replace_lease(self.namespace, self.name,
                                    self._body(transitions, acquired, meta.get("resourceVersion")))
        except Conflict:
            return False
        self._renewed_at = now
        return True

    async def run(self) -> None:
        while True:
            try:
                ok = await asyncio.to_thread(self.try_acquire_or_renew)
            except KubeError as e:
                log.warning("leader election round failed", extra={"error": str(e)})
                ok = False
            self._set(ok or self.is_leader)
            if ok and self.on_renew is not None:
                self.on_renew()
            await asyncio.sleep(self.renew_period)
            if self._leading and not self.is_leader:
                self._set(False)

    def release_sync(self) -> None:
        """Give the Lease up on shutdown so another replica takes over at once."""
        if not self._leading:
            return
        self._set(False)
        try:
            lease = self.kube.get_lease(self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                self.kube.replace_lease(self.namespace, self.name, lease)
        except KubeError:
            pass
