"""The operator commands cannot hand a live address to a second pod, and write all of
a pools file or nothing (issue 11.1, 11.3, CLI side), the real ``stickyip`` command
against a real redis-server:

- ``ipam release`` of a reservation a pod holds is refused, naming the pod; with
  ``--force`` it is quarantined (said so) and the address is given to no one else;
- a missing reservation is an error unless ``--ignore-not-found``;
- ``pool delete`` names what still draws on the pool;
- ``pool apply`` writes nothing when any part of the file is refused, ``--dry-run``
  writes nothing at all, and a no-op says ``unchanged``;
- ``ipam check`` names addresses, never bitmap offsets.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import redis

from ipam import AddressTaken, RedisIpam, ReservationInUse, ReservationKey
from tests.support.cli import stickyip as run_stickyip

POOLS = "pools:\n  - {name: prod-a, cidr: 10.20.0.0/24, blockSize: 28}\n"


def stickyip(url: str, *args: str, stdin: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    return run_stickyip("--redis-url", url, *args, stdin=stdin)


def keys(url: str) -> dict[bytes, bytes]:
    r = redis.Redis.from_url(url)
    try:
        return {k: r.dump(k) or b"" for k in sorted(r.keys("*")) if b":log" not in k}
    finally:
        r.close()


@pytest.fixture
async def pool(redis_url: str, ipam: RedisIpam) -> RedisIpam:
    assert stickyip(redis_url, "pool", "apply", "-f", "-", stdin=POOLS).returncode == 0
    return ipam


async def test_release_of_a_held_reservation_is_refused_then_quarantined(
        redis_url: str, pool: RedisIpam) -> None:
    key = ReservationKey.of("prod", "db", 0)
    held = await pool.claim(key, pool="prod-a", node="node-1", holder="uid-1",
                            pod="prod/db-0")
    address = str(held.address)

    refused = stickyip(redis_url, "ipam", "release", "prod/db/0")
    assert refused.returncode == 1 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith("error: ") and "prod/db-0" in line and "uid-1" in line
    assert line.endswith("(to quarantine it: stickyip ipam release prod/db/0 --force)")
    still = await pool.reservation(key)
    assert still is not None and still.state.value == "bound"

    forced = stickyip(redis_url, "ipam", "release", "prod/db/0", "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == (
        f"reservation prod/db/0 quarantined ({address}): pod prod/db-0 (UID uid-1) still "
        "holds it; the address is handed to no one until that pod is gone")
    quarantined = await pool.reservation(key)
    assert quarantined is not None and quarantined.state.value == "quarantined"
    with pytest.raises(AddressTaken):
        await pool.claim(ReservationKey.of("prod", "other", 0), pool="prod-a",
                         address=address)
    with pytest.raises(ReservationInUse):
        await pool.claim(key, pool="prod-a", node="node-2", holder="uid-2")
    shown = json.loads(stickyip(redis_url, "ipam", "show", "-o", "json").stdout)
    assert [(r["owner"], r["state"]) for r in shown] == [("sts/prod/db/0", "quarantined")]

    again = stickyip(redis_url, "ipam", "release", "prod/db/0", "--force")  # idempotent
    assert (again.returncode, again.stdout) == (0, forced.stdout)
    unforced = stickyip(redis_url, "ipam", "release", "prod/db/0")
    assert unforced.returncode == 1 and "quarantined" in unforced.stderr
    assert "--force" not in unforced.stderr, "no advice to force what is already forced"


async def test_release_without_a_pod_and_of_a_missing_key(redis_url: str,
                                                         pool: RedisIpam) -> None:
    key = ReservationKey.of("prod", "db", 1)
    res = await pool.claim(key, pool="prod-a", node="node-1")  # reserved, no pod yet
    out = stickyip(redis_url, "ipam", "release", "prod/db/1")
    assert out.returncode == 0
    assert out.stdout.strip() == f"reservation prod/db/1 released ({res.address})"
    missing = stickyip(redis_url, "ipam", "release", "prod/db/1")
    assert missing.returncode == 1
    assert missing.stderr.strip() == ("error: reservation prod/db/1 not found "
                                      "(--ignore-not-found makes this exit 0)")
    ignored = stickyip(redis_url, "ipam", "release", "prod/db/1", "--ignore-not-found")
    assert ignored.returncode == 0 and "not found" in ignored.stdout


async def test_pool_delete_names_what_blocks_it(redis_url: str, pool: RedisIpam) -> None:
    key = ReservationKey.of("prod", "db", 0)
    held = await pool.claim(key, pool="prod-a", node="node-1")
    refused = stickyip(redis_url, "pool", "delete", "prod-a")
    assert refused.returncode == 1
    assert f"sts/prod/db/0 ({held.address})" in refused.stderr
    dry = stickyip(redis_url, "pool", "delete", "prod-a", "--dry-run")
    assert dry.returncode == 1 and "sts/prod/db/0" in dry.stderr
    await pool.release_reservation(key)
    ok = stickyip(redis_url, "pool", "delete", "prod-a", "--dry-run")
    assert ok.stdout.strip() == "pool/prod-a deleted (dry run)"
    assert [s.name for s in await pool.pool_specs()] == ["prod-a"]
    assert stickyip(redis_url, "pool", "delete", "prod-a").stdout.strip() == "pool/prod-a deleted"
    assert await pool.pool_specs() == []


async def test_pool_apply_is_all_or_nothing(redis_url: str, pool: RedisIpam) -> None:
    await pool.claim(ReservationKey.of("prod", "db", 0), pool="prod-a", node="node-1")
    before = keys(redis_url)
    # a new pool, and a change to prod-a that its reservation forbids
    mixed = ("pools:\n  - {name: new, cidr: 10.40.0.0/24}\n"
             "  - {name: prod-a, cidr: 10.20.0.0/24, blockSize: 26}\n")
    out = stickyip(redis_url, "pool", "apply", "-f", "-", stdin=mixed)
    assert out.returncode == 1 and "nothing was applied" in out.stderr
    assert keys(redis_url) == before and [s.name for s in await pool.pool_specs()] == ["prod-a"]

    plan = ("pools:\n  - {name: new, cidr: 10.40.0.0/24}\n"
            "  - {name: prod-a, cidr: 10.20.0.0/24, blockSize: 28, exclude: [10.20.0.9]}\n"
            "  - {name: same, cidr: 10.50.0.0/24}\n")
    stickyip(redis_url, "pool", "apply", "-f", "-",
             stdin="pools: [{name: same, cidr: 10.50.0.0/24}]")
    before = keys(redis_url)
    dry = stickyip(redis_url, "pool", "apply", "-f", "-", "--dry-run", stdin=plan)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == ["pool/new created (dry run)",
                                       "pool/prod-a configured (dry run)",
                                       "pool/same unchanged (dry run)"]
    assert keys(redis_url) == before, "a dry run writes nothing"
    real = stickyip(redis_url, "pool", "apply", "-f", "-", stdin=plan)
    assert real.stdout.splitlines() == ["pool/new created", "pool/prod-a configured",
                                        "pool/same unchanged"]
    again = stickyip(redis_url, "pool", "apply", "-f", "-", stdin=plan)
    assert again.stdout.splitlines() == ["pool/new unchanged", "pool/prod-a unchanged",
                                         "pool/same unchanged"]


async def test_check_names_addresses_not_offsets(redis_url: str, pool: RedisIpam) -> None:
    ref = await pool.pool("prod-a")
    client = redis.Redis.from_url(redis_url)
    try:  # an address marked used in block 0's bitmap that nobody owns
        client.setbit(ref.prefix + "u:" + ref.geo.block_hex(0), 14, 1)
    finally:
        client.close()
    rows = json.loads(stickyip(redis_url, "ipam", "check", "-o", "json").stdout)
    leaked = [r for r in rows if r["kind"] == "leaked-address"]
    assert [r["address"] for r in leaked] == ["10.20.0.14"]
    assert all("offset" not in r and "block" not in r for r in rows)
    table = stickyip(redis_url, "ipam", "check").stdout.splitlines()
    assert table[0].split() == ["POOL", "KIND", "ADDRESS", "DETAIL", "REPAIRED"]
    assert any(line.split()[:3] == ["prod-a", "leaked-address", "10.20.0.14"]
               for line in table[1:])
