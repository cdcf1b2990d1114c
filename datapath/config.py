"""Settings of the node agent, read from ``STICKYIP_AGENT_*`` environment variables
(command-line flags of ``stickyip agent`` override them)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from datapath.bird import parse_peer


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STICKYIP_AGENT_", extra="ignore")

    node: str = Field(default="", description="this node's name (as in Kubernetes)")
    node_address: str = Field(
        default="", description="this node's IPv4 address other nodes route pod traffic to "
        "(default: the first global IPv4 address of a non-pod interface)")
    node_address6: str = Field(
        default="", description="this node's IPv6 address other nodes route pod IPv6 "
        "traffic to and BGP peers with (default: the first global IPv6 address of a non-pod "
        "interface; a node without one gets no IPv6 routes from the others)")
    ipv6: bool = Field(
        default=True, description="route pods' IPv6 traffic: turns on "
        "net.ipv6.conf.all.forwarding in the node's netns (a node taking its own default "
        "route from router advertisements then needs accept_ra=2)")
    socket: str = Field(default="/run/stickyip/agent.sock",
                        description="unix socket the CNI plugin talks to")
    pin_root: str = Field(default="/sys/fs/bpf/stickyip",
                          description="bpffs directory holding the pinned eBPF maps")
    state_dir: str = Field(default="/var/lib/stickyip/agent",
                           description="directory of the endpoint records kept across restarts")
    delete_queue_dir: str = Field(
        default="", description="the CNI deletion queue on the node's disk: DELs the plugin "
        "could not hand to the agent, replayed at start (default: 'cni-delete-queue' beside "
        "state_dir, /var/lib/stickyip/cni-delete-queue, the plugin's default; its "
        "'deleteQueueDir' network config key names another)")
    routing: Literal["direct", "bgp"] = Field(
        default="direct", description="direct: kernel routes to other nodes' blocks; "
        "bgp: announce this node's blocks with BIRD 2")
    default_pool: str = Field(default="default",
                              description="pool of ephemeral addresses unless the network "
                              "config names one ('pool'); 'V4POOL,V6POOL' gives each pod one "
                              "address of each family")
    metrics_host: str = Field(default="0.0.0.0", description="address of /metrics and /healthz")
    metrics_port: int = Field(default=9402, ge=0, le=65535,
                              description="port of /metrics and /healthz (0: off)")
    feed: str = Field(
        default="", description="the routing feed (stickyip feed) to follow: 'HOST:PORT' or "
        "'unix:PATH', several separated by commas (one picked per connection); empty: "
        "follow the store itself (small clusters: every agent is then a reader of the "
        "store; see docs/scale.md)")
    sync_interval: float = Field(
        default=0.1, gt=0, description="at most one route update per this many seconds: "
        "changes arriving closer together are applied at once")
    full_resync_interval: float = Field(
        default=300.0, gt=0, description="seconds between full diffs of the kernel's routes "
        "against the view in memory (drift repair: routes removed by hand); never a read "
        "of the store")
    resnapshot_spread: float = Field(
        default=2.0, ge=0, description="after a gap in the change log, the fresh snapshot "
        "waits a random 0..this many seconds (thousands of agents told at once)")
    heartbeat_interval: float = Field(default=3.0,
                                      description="seconds between heartbeats written to IPAM")
    route_protocol: int = Field(default=201, description="rtnetlink protocol number marking "
                                "routes this agent owns")
    gateway: str = Field(default="169.254.1.1",
                         description="link-local IPv4 default gateway seen by pods")
    gateway6: str = Field(default="fe80::1",
                          description="link-local IPv6 default gateway seen by pods (an "
                          "address of every host veth)")
    host_prefix: str = Field(default="sip", description="name prefix of host-side pod veths")
    bird_config: str = Field(default="/run/stickyip/bird.conf",
                             description="BIRD 2 config file the agent generates (bgp mode)")
    bird_socket: str = Field(default="/run/bird/bird.ctl",
                             description="BIRD control socket for 'birdc configure'")
    birdc: str = Field(default="birdc", description="birdc executable")
    bgp_asn: int = Field(default=64512, description="AS number of the iBGP full mesh")
    bgp_peers: list[str] = Field(
        default_factory=list, description="routers outside the node mesh to peer with in "
        "bgp mode (top-of-rack routers, route reflectors; directly connected), each "
        "'ADDRESS AS', e.g. '192.0.2.1 64513' (an IPv6 address peers over IPv6 when the node "
        "has one); in the environment a JSON list")
    cni_bin_dir: str = Field(
        default="", description="install the CNI plugin here at start-up (e.g. /opt/cni/bin), "
        "as a standalone 'python -S' script; empty: do not install")
    conflict_probe_wait: float = Field(
        default=0.03, ge=0, description="seconds ADD listens for another holder of a pod's "
        "address on the node's links (ARP probe, IPv6 duplicate address detection; "
        "the probe goes out twice within it), while the pod is plumbed; detects holders "
        "answering within that time (the periodic re-check catches slower ones); "
        "0: no probing")
    conflict_links: list[str] = Field(
        default_factory=list, description="links to probe and announce on (default: every "
        "up Ethernet link but loopback and pod veths); in the environment a JSON list")
    conflict_announce: bool = Field(
        default=True, description="announce a pod's addresses on the node's links after "
        "ADD (gratuitous ARP, unsolicited neighbour advertisement), so that neighbours "
        "holding an entry for a re-homed address update it at once")
    conflict_recheck_interval: float = Field(
        default=300.0, ge=0, description="seconds between re-checks of running fixed-IP "
        "pods' addresses for another holder (jittered by up to a fifth); 0: never")
    kube: bool = Field(default=False, description="read pods from the Kubernetes API to find "
                       "their StatefulSet and pool (see plumbing.kube.client settings)")
    hooks: list[str] = Field(
        default_factory=list, description="endpoint hooks as 'module:factory'; the factory "
        "is called with the AgentSettings and returns an EndpointHook")

    @field_validator("feed")
    @classmethod
    def _feed_parses(cls, v: str) -> str:
        from datapath.feedwire import parse_address

        for a in feed_addresses(v):
            parse_address(a)
        return v

    @field_validator("bgp_peers")
    @classmethod
    def _peers_parse(cls, peers: list[str]) -> list[str]:
        for p in peers:
            parse_peer(p)
        return peers

    @model_validator(mode="after")
    def _queue_beside_state(self) -> AgentSettings:
        if not self.delete_queue_dir:
            parent = os.path.dirname(self.state_dir.rstrip("/")) or "."
            self.delete_queue_dir = os.path.join(parent, "cni-delete-queue")
        return self


def feed_addresses(feed: str) -> list[str]:
    """The entries of a ``feed`` setting."""
    return [a.strip() for a in feed.split(",") if a.strip()]
