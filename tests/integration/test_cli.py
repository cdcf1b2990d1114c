"""The operator CLI against a real redis-server: pools, listings, history, release,
check --repair, and clear errors that write nothing on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.support.redis_server import RedisServer, processes_in

ROOT = Path(__file__).resolve().parents[2]

POOLS = """
pools:
  - name: prod-a
    cidr: 10.20.0.0/16
  - name: small
    cidr: 10.30.0.0/24
    blockSize: 28
    nodeSelector: {zone: a}
    exclude: ["10.30.0.5", "10.30.0.10-10.30.0.12"]
"""


def cli(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STICKYIP_REDIS_URL=url)
    return subprocess.run([sys.executable, "-m", "stickyip.cli", *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    r.close()
    return redis_server.url


def keys(url: str) -> list[bytes]:
    r = redis.Redis.from_url(url)
    try:
        return sorted(r.keys("*"))
    finally:
        r.close()


def test_pool_apply_list_and_json(url: str, tmp_path: Path) -> None:
    f = tmp_path / "pools.yaml"
    f.write_text(POOLS)
    out = cli(url, "pool", "apply", "-f", str(f))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["pool/prod-a created", "pool/small created"]
    again = cli(url, "pool", "apply", "-f", str(f))
    assert again.stdout.splitlines() == ["pool/prod-a unchanged", "pool/small unchanged"]
    table = cli(url, "pool", "list")
    assert table.stdout.splitlines()[0].split()[:3] == ["NAME", "CIDR", "BLOCKSIZE"]
    rows = json.loads(cli(url, "pool", "list", "-o", "json").stdout)
    small = next(r for r in rows if r["name"] == "small")
    assert small["free"] == 256 - 2 - 4
    assert (small["blocksClaimed"], small["blocksTotal"]) == (0, 16)
    assert small["nodeSelector"] == {"zone": "a"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pools: [{name: a, cidr: 10.1.0.0/33}]", "invalid CIDR"),
        ("pools: [{name: a, cidr: 10.1.0.1/16}]", "host bits"),
        ("pools: [{name: a, cidr: 10.1.0.0/24, blockSize: 16}]", "does not fit"),
        ("pools: [{name: a, cidr: 10.1.0.0/16}, {name: b, cidr: 10.1.128.0/17}]", "overlap"),
        ("pools: [{name: a, cidr: 10.1.0.0/16}, {name: a, cidr: 10.2.0.0/16}]", "twice"),
        ("pools: [{name: a, cidr: 10.1.0.0/24, exclude: [10.9.0.1]}]", "outside"),
        ("pools: [{name: Bad_Name, cidr: 10.1.0.0/24}]", "invalid pool"),
        ("pools: [{name: a, cidr: 10.1.0.0/24, colour: red}]", "unknown key 'colour'"),
        ("pools: [{name: a]", "not valid YAML"),
        ("just a string", "must be a mapping"),
        ("", "holds no pool"),
    ],
)
def test_bad_pool_files_are_refused_and_write_nothing(url: str, tmp_path: Path, text: str,
                                                      message: str) -> None:
    f = tmp_path / "pools.yaml"
    f.write_text(POOLS)
    assert cli(url, "pool", "apply", "-f", str(f)).returncode == 0
    before = keys(url)
    out = cli(url, "pool", "apply", "-f", "-", stdin=text)
    assert out.returncode == 1
    assert message in out.stderr and out.stderr.startswith("error: ")
    assert len(out.stderr.strip().splitlines()) == 1, "the error must be one clear line"
    assert keys(url) == before


def test_pool_overlapping_an_existing_one_is_refused(url: str, tmp_path: Path) -> None:
    f = tmp_path / "pools.yaml"
    f.write_text(POOLS)
    cli(url, "pool", "apply", "-f", str(f))
    before = keys(url)
    out = cli(url, "pool", "apply", "-f", "-", stdin="name: other\ncidr: 10.30.0.128/25\n")
    assert out.returncode == 1 and "overlaps existing pool 'small'" in out.stderr
    assert keys(url) == before


def test_missing_file_and_bad_reservation_are_clear(url: str) -> None:
    out = cli(url, "pool", "apply", "-f", "/nonexistent/pools.yaml")
    assert out.returncode == 1 and "cannot read pools file" in out.stderr
    out = cli(url, "ipam", "release", "not-a-key")
    assert out.returncode == 1 and "NAMESPACE/STATEFULSET/ORDINAL" in out.stderr
    out = cli(url, "ipam", "history", "192.168.255.1")
    assert out.returncode == 1 and "not inside any pool" in out.stderr


async def test_show_history_release_and_check_repair(url: str, tmp_path: Path) -> None:
    from ipam import RedisIpam, ReservationKey, ephemeral_owner
    from ipam.connection import open_redis

    f = tmp_path / "pools.yaml"
    f.write_text(POOLS)
    cli(url, "pool", "apply", "-f", str(f))
    client, _ = await open_redis(url)
    ipam = RedisIpam(client)
    key = ReservationKey.of("prod", "db", 0)
    res = await ipam.claim(key, pool="small", node="node-1", holder="u1")
    eph = await ipam.allocate(pool="small", node="node-2", owner=ephemeral_owner("c1"))

    shown = json.loads(cli(url, "ipam", "show", "-o", "json").stdout)
    assert {(r["owner"], r["address"], r["node"]) for r in shown} == {
        ("sts/prod/db/0", str(res.address), "node-1"),
        ("eph/c1/eth0", str(eph.address), "node-2")}
    only = json.loads(cli(url, "ipam", "show", "--node", "node-2", "-o", "json").stdout)
    assert [r["owner"] for r in only] == ["eph/c1/eth0"]
    hist = json.loads(cli(url, "ipam", "history", str(res.address), "-o", "json").stdout)
    assert [(h["op"], h["owner"]) for h in hist] == [("reserve", "sts/prod/db/0")]

    # damage the store: an address marked used with no owner (its block's free
    # counter is then off too)
    ref = await ipam.pool("small")
    await client.setbit(ref.prefix + "u:" + ref.geo.block_hex(0), 14, 1)
    check = cli(url, "ipam", "check", "-o", "json")
    assert check.returncode == 1
    assert sorted(f["kind"] for f in json.loads(check.stdout)) == [
        "counter-mismatch", "leaked-address"]
    repaired = cli(url, "ipam", "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout
    assert cli(url, "ipam", "check").stdout.strip() == "no inconsistencies found"

    # a reservation a pod holds is not released (issue 11): its pod goes first
    await ipam.unbind(key, holder="u1")
    out = cli(url, "ipam", "release", "prod/db/0")
    assert out.stdout.strip() == f"reservation prod/db/0 released ({res.address})"
    assert await ipam.reservation(key) is None
    out = cli(url, "ipam", "release", "prod/db/0")  # a missing key is an error, as kubectl
    assert out.returncode == 1 and out.stderr.startswith("error: reservation prod/db/0 not found")
    out = cli(url, "ipam", "release", "prod/db/0", "--ignore-not-found")
    assert "not found" in out.stdout and out.returncode == 0
    await ipam.aclose()


def test_embedded_store_serves_without_a_url(tmp_path: Path) -> None:
    env = dict(os.environ, STICKYIP_REDIS_URL="",
               STICKYIP_EMBEDDED_PATH=str(tmp_path / "emb" / "ipam.rdb"))
    run = lambda *a, stdin=None: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "stickyip.cli", *a], cwd=ROOT, env=env, input=stdin,
        capture_output=True, text=True, timeout=60)
    out = run("pool", "apply", "-f", "-", stdin="name: emb\ncidr: 10.50.0.0/24\n")
    assert out.returncode == 0, out.stderr
    # a second process finds the pool again: the data lives in the embedded store's files
    rows = json.loads(run("pool", "list", "-o", "json").stdout)
    assert [r["name"] for r in rows] == ["emb"]
    # and the server each process started stopped with it
    assert processes_in(tmp_path) == []
