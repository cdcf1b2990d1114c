"""Settings of service load balancing (``STICKYIP_SERVICES_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServicesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STICKYIP_SERVICES_", extra="ignore")

    enabled: bool = Field(default=True, description="attach the service program to pod veths")
    node_addresses: list[str] = Field(
        default_factory=list, description="this node's addresses serving NodePorts")
    algorithm: Literal["random", "maglev"] = Field(
        default="random", description="default backend choice; a Service may override it "
        "with the annotation stickyip.io/lb-algorithm")
    pin_dir: str = Field(default="", description="bpffs directory of the service and policy "
                         "maps (default: 'features' under the agent's pin root)")
