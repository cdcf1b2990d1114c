"""Settings of NetworkPolicy enforcement (``STICKYIP_POLICY_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PolicySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STICKYIP_POLICY_", extra="ignore")

    enabled: bool = Field(default=True, description="attach the policy program to pod veths")
    host_addresses: list[str] = Field(
        default_factory=list, description="this node's addresses: traffic from and to them "
        "(kubelet probes) is always allowed, as the host identity")
