"""Where the IPAM keeps its state in Redis (pure: key names and record encodings).

Every key shares ONE hash tag, ``{stickyip}``, so every script may touch several
pools and the owner registry atomically, and the store still lives in one Redis
Cluster slot (the design sizes it for one primary). See ``ipam/scripts.py`` for
the per-key contents, and docs/ipam.md for the layout as a whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ipam.errors import IpamError
from ipam.models import PoolSpec
from ipam.ranges import PoolGeometry

#: The version of the key layout below; scripts refuse a store holding another.
LAYOUT_VERSION = "2"
TAG = "{stickyip}"
PREFIX = f"sip:{TAG}:"
#: hash: version, gen (store generation id), created, rev (revision), poolseq
LAYOUT = PREFIX + "layout"
#: hash: pool name -> compact JSON the scripts need (see :func:`registry_entry`)
POOLS = PREFIX + "pools"
#: hash: pool name -> canonical spec JSON (what ``pool list`` shows)
SPECS = PREFIX + "specs"
#: hash: pool name -> "FIRST LAST" (family-tagged hex, for overlap checks)
SPANS = PREFIX + "spans"
#: hash: owner key -> JSON record (one per owner, holding both families)
RECORDS = PREFIX + "rec"
#: zset: owner -> expiry time of a retained reservation (finite retain only)
EXPIRY = PREFIX + "exp"
#: hash: record class (ephemeral, reserved, bound, retained, quarantined) -> count
COUNTS = PREFIX + "count"
#: hash: "NODE|e" (ephemeral), "NODE|m" / "NODE|w" (sticky by failure policy) -> count
HOMES = PREFIX + "homes"
#: zset (all scores 0): "NODE|OWNER" for every sticky record homed on NODE, so the
#: reservations of one node are a lexicographic range (failover reads only those)
BYHOME = PREFIX + "byhome"
#: hash: node -> last heartbeat time; hash: node -> time it was fenced
HEARTBEATS = PREFIX + "hb"
FENCED = PREFIX + "fenced"
#: stream: the change log (entry id 0-REVISION, field c = JSON list of changes)
LOG = PREFIX + "log"
#: hash: "ops" counter scripts bump when a retry finds its work done (see WAIT)
TOUCH = PREFIX + "touch"

#: Keys of the layout before this one (stickyip 0.1): refused, never mixed.
OLD_REGISTRY = "sip:pools"
OLD_KEY = re.compile(r"^sip:(\{[^}]*\}:.*|node:.*|pools)$")

#: Per-pool keys live under ``sip:{stickyip}:p:POOL:GEN:`` (GEN changes when a pool is
#: re-created, so nothing of an older pool of the same name is ever read again).
_POOL_KEY = re.compile(r"^sip:\{stickyip\}:p:([a-z0-9.-]+):(g\d+):(.+)$")
_GLOBAL_KEYS = {LAYOUT, POOLS, SPECS, SPANS, RECORDS, EXPIRY, COUNTS, HOMES, BYHOME, HEARTBEATS,
                FENCED, LOG, TOUCH}
_POOL_SUFFIX = re.compile(
    r"^(m|blk|bf|bu|ex|mig|fb|free|nodes|ow|aud|nf:[a-z0-9.-]+|u:[0-9a-f]+|o:[0-9a-f]+"
    r"|a:[0-9a-f]+:\d+)$")


def pool_prefix(pool: str, gen: str) -> str:
    return f"{PREFIX}p:{pool}:{gen}:"


def parse_pool_key(key: str) -> tuple[str, str, str] | None:
    """(pool, generation, suffix) of a per-pool key, None for any other key."""
    m = _POOL_KEY.match(key)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def is_known_global(key: str) -> bool:
    return key in _GLOBAL_KEYS


def is_known_pool_suffix(suffix: str) -> bool:
    return bool(_POOL_SUFFIX.match(suffix))


def registry_entry(geo: PoolGeometry) -> dict[str, Any]:
    """What the scripts read about a pool (its generation ``g`` is added by the
    script that creates it): family, block size in addresses (at most 2^16), hex
    width of a block index, the last block index, CIDR and block prefix."""
    return {"f": geo.family, "bs": geo.block_size, "w": geo.hex_width,
            "last": geo.block_hex(geo.block_count - 1), "net": str(geo.network),
            "bp": geo.block_prefix}


@dataclass(frozen=True, slots=True)
class PoolRef:
    """A registered pool as a client caches it: spec, geometry and generation."""

    spec: PoolSpec
    geo: PoolGeometry
    gen: str

    @property
    def prefix(self) -> str:
        return pool_prefix(self.spec.name, self.gen)


def decode_spec(raw: str | bytes) -> PoolSpec:
    try:
        return PoolSpec.model_validate(json.loads(raw))
    except ValueError as e:
        raise IpamError(f"a stored pool spec is damaged ({e}); run 'stickyip ipam check'") from e
