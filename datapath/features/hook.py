"""The agent's endpoint hook for services and NetworkPolicy: attaches the feature
programs to each pod's host-side veth (prio 10 services, prio 20 policy), tells the
policy manager which pods are local, and builds everything from the agent settings
(``stickyip agent --hook datapath.features.hook:hook``)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from typing import TYPE_CHECKING

from datapath.features.policy import PodInfo, PolicyManager
from datapath.features.policy.config import PolicySettings
from datapath.features.services import ServiceManager
from datapath.features.services.config import ServicesSettings
from datapath.hooks import Endpoint
from datapath.loader import FeaturePrograms
from datapath.maps import policy_denied

if TYPE_CHECKING:
    from datapath.config import AgentSettings
    from datapath.features.kube import KubeFeed

log = logging.getLogger("stickyip.datapath.features")


class FeaturesHook:
    """An :class:`datapath.hooks.EndpointHook` for the service and policy programs."""

    def __init__(self, programs: FeaturePrograms, *, services: ServiceManager | None,
                 policy: PolicyManager | None, lock: threading.Lock | None = None,
                 netns: str | None = None) -> None:
        self.programs = programs
        self.services = services
        self.policy = policy
        self.lock = lock or threading.Lock()
        self.netns = netns
        self.feed: KubeFeed | None = None

    def map_fill(self) -> dict[str, tuple[int, int]]:
        """How full the service and policy maps are (``stickyip_bpf_map_*``)."""
        return self.programs.map_fill()

    def drops(self) -> dict[str, int]:
        """Packets the policy programs denied, every endpoint and direction."""
        return {"policy": sum(int(v[0]) for _, v in self.programs.items(policy_denied.NAME))}

    def _attach(self, ep: Endpoint) -> None:
        self.programs.attach(ep.host_ifindex, services=self.services is not None,
                             policy=self.policy is not None, netns=self.netns)

    def _known(self, ep: Endpoint) -> None:
        # until the API says more (named ports), the agent's labels stand for the pod
        assert self.policy is not None
        key = f"{ep.namespace}/{ep.pod}"
        if key not in self.policy.pods:
            self.policy.pods[key] = PodInfo(namespace=ep.namespace, name=ep.pod,
                                            addresses=ep.addresses, labels=dict(ep.labels))

    # pyroute2's sync IPRoute cannot run inside the agent's event loop, and map
    # writes may take a while at scale: the work runs in a thread, under the lock
    # shared with the Kubernetes feed.

    async def endpoint_added(self, ep: Endpoint) -> None:
        await asyncio.to_thread(self._added, ep)
        log.info("features attached", extra={"pod": f"{ep.namespace}/{ep.pod}",
                                             "ifindex": ep.host_ifindex})

    async def endpoint_removed(self, ep: Endpoint) -> None:
        await asyncio.to_thread(self._removed, ep)

    async def resync(self, endpoints: list[Endpoint]) -> None:
        await asyncio.to_thread(self._resync, endpoints)

    def _added(self, ep: Endpoint) -> None:
        with self.lock:
            self._attach(ep)
            if self.policy is not None:
                self._known(ep)
                self.policy.set_local(self.policy.local | set(ep.addresses))

    def _removed(self, ep: Endpoint) -> None:
        with self.lock:
            self.programs.detach(ep.host_ifindex, services=self.services is not None,
                                 policy=self.policy is not None, netns=self.netns)
            if self.policy is not None:
                self.policy.set_local(self.policy.local - set(ep.addresses))

    def _resync(self, endpoints: list[Endpoint]) -> None:
        with self.lock:
            for ep in endpoints:
                self._attach(ep)
                if self.policy is not None:
                    self._known(ep)
            if self.policy is not None:
                self.policy.set_local({a for ep in endpoints for a in ep.addresses})
                self.policy.reconcile()
            if self.services is not None:
                self.services.reconcile()


def hook(settings: AgentSettings) -> FeaturesHook:
    """Factory named in the agent's ``hooks`` setting."""
    svc_s = ServicesSettings()
    pol_s = PolicySettings()
    programs = FeaturePrograms(pin_dir=svc_s.pin_dir or f"{settings.pin_root}/features")
    programs.load()
    node_addrs = [ipaddress.ip_address(a) for a in svc_s.node_addresses]
    for own in (settings.node_address, settings.node_address6):
        if own:
            node_addrs.append(ipaddress.ip_address(own))
    services = (ServiceManager(programs, node_name=settings.node, node_addresses=node_addrs,
                               default_maglev=svc_s.algorithm == "maglev")
                if svc_s.enabled else None)
    host = [ipaddress.ip_address(a) for a in pol_s.host_addresses] + node_addrs
    policy = PolicyManager(programs, host_addresses=host) if pol_s.enabled else None
    h = FeaturesHook(programs, services=services, policy=policy)
    if settings.kube:
        from datapath.features.kube import KubeFeed
        from plumbing.kube.client import api_client

        h.feed = KubeFeed(api_client(), services=services, policy=policy, lock=h.lock)
        h.feed.start()
    return h
