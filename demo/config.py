"""Settings of the demo (``STICKYIP_DEMO_*``; the command-line flags override them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STICKYIP_DEMO_", extra="ignore")

    datapath: Literal["auto", "on", "off"] = Field(
        default="auto", description="run the eBPF datapath in network namespaces: 'auto' "
        "does when running as root, 'off' plays the control plane only")
    service_policy: bool = Field(
        default=True, description="with the datapath: the agents load the eBPF service and "
        "policy programs (--hook datapath.features.hook:hook, fed from the API) and the "
        "demo probes the Service VIP and a NetworkPolicy; off: those probes are skipped")
    fast: bool = Field(default=False, description="short controller timers and no pauses "
                       "between steps (tests)")
    pause: float = Field(default=1.0, ge=0, description="seconds to pause after each step's "
                         "output so a reader can follow (0 with fast)")
    namespace: str = Field(default="shop", description="namespace of the demo's objects")
    statefulset: str = Field(default="web", description="name of the demo StatefulSet")
    pool: str = Field(default="demo", description="IP pool the StatefulSet draws from")
    pool_cidr: str = Field(default="10.244.0.0/16", description="CIDR of the demo pool")
    block_size: int = Field(default=26, description="prefix length of the pool's node blocks")
    dual_stack: bool = Field(default=True, description="the StatefulSet and every pod get an "
                             "IPv6 address too (one address of each family per ordinal, "
                             "same home, same epoch) and the Service is dual-stack")
    pool6: str = Field(default="demo6", description="IPv6 pool of the dual-stack StatefulSet")
    pool6_cidr: str = Field(default="fd00:244::/112", description="CIDR of the IPv6 pool")
    block_size6: int = Field(default=122, description="prefix length of its node blocks")
    retain: str = Field(default="1h", description="stickyip.io/retain of the StatefulSet")
    nodes: int = Field(default=3, ge=2, le=8, description="number of nodes")
    step_timeout: float = Field(default=60.0, gt=0, description="seconds each story step may "
                                "take to converge before the demo fails")
    work_dir: str = Field(default="", description="parent of the demo's temporary directory "
                          "(default: the system temp dir)")
    keep_logs: bool = Field(default=False, description="keep the temporary directory with the "
                            "components' logs after the run")
