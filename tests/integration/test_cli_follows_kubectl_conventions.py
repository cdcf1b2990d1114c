"""The ``stickyip`` command follows kubectl's and calicoctl's conventions (issue 11.8):
global flags before or after the sub-command, ``-o table|wide|json|yaml|name``,
``--version``, human durations and the expiry of retained reservations, numbers as
numbers in JSON, ``ipam show`` filtered by namespace and StatefulSet, and shell
completion generated from the parser. The real command against a real redis-server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ipam import RedisIpam, ReservationKey, ephemeral_owner
from tests.support.cli import stickyip as run_stickyip
from tests.support.cli import stickyip_env

POOLS = """
pools:
  - name: prod-a
    cidr: 10.20.0.0/24
    blockSize: 28
    exclude: ["10.20.0.5"]
  - name: small
    cidr: 10.30.0.0/26
    blockSize: 28
"""


def stickyip(*args: str, url: str = "", stdin: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    settings = {"STICKYIP_REDIS_URL": url} if url else {}
    return run_stickyip(*args, env=stickyip_env(**settings), stdin=stdin)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
async def store(redis_url: str, ipam: RedisIpam) -> RedisIpam:
    ok(stickyip("pool", "apply", "-f", "-", url=redis_url, stdin=POOLS))
    return ipam


def test_global_flags_go_before_or_after_the_sub_command(redis_url: str,
                                                         store: RedisIpam) -> None:
    for args in (["--redis-url", redis_url, "pool", "list", "-o", "name"],
                 ["pool", "list", "-o", "name", "--redis-url", redis_url],
                 ["pool", "--redis-url", redis_url, "list", "-o", "name"],
                 ["pool", "list", "--log-level", "DEBUG", "--redis-url", redis_url,
                  "-o", "name"]):
        assert ok(stickyip(*args)).splitlines() == ["pool/prod-a", "pool/small"], args
    bad = stickyip("pool", "list", "--log-level", "loud", "--redis-url", redis_url)
    assert bad.returncode == 2 and "argument --log-level: invalid choice: 'loud'" in bad.stderr


def test_version() -> None:
    out = ok(stickyip("--version")).split()
    assert out[0] == "stickyip" and len(out) == 2


def test_output_formats(redis_url: str, store: RedisIpam) -> None:
    table = ok(stickyip("pool", "list", url=redis_url)).splitlines()
    assert table[0].split() == ["NAME", "CIDR", "BLOCKSIZE", "USED", "FREE", "BLOCKS",
                                "NODESELECTOR"]
    assert table[1].split()[:6] == ["prod-a", "10.20.0.0/24", "28", "0", "253", "0/16"]
    wide = ok(stickyip("pool", "list", "-o", "wide", url=redis_url)).splitlines()
    assert wide[0].split()[-3:] == ["SIZE", "EXCLUDED", "EXCLUDE"]
    assert wide[1].split()[-3:] == ["256", "3", "10.20.0.5"]
    rows = json.loads(ok(stickyip("pool", "list", "-o", "json", url=redis_url)))
    assert yaml.safe_load(ok(stickyip("pool", "list", "-o", "yaml", url=redis_url))) == rows
    prod = rows[0]
    assert prod["name"] == "prod-a"
    for number in ("blockSize", "size", "used", "free", "excluded", "blocksClaimed",
                   "blocksTotal"):
        assert type(prod[number]) is int, number
    assert (prod["free"], prod["blocksClaimed"], prod["blocksTotal"]) == (253, 0, 16)


async def test_show_filters_and_shows_retained_reservations_with_their_expiry(
        redis_url: str, store: RedisIpam) -> None:
    db0, db1 = ReservationKey.of("prod", "db", 0), ReservationKey.of("prod", "db", 1)
    web0, cache0 = ReservationKey.of("prod", "web", 0), ReservationKey.of("dev", "db", 0)
    await store.claim(db0, pool="prod-a", node="node-1", holder="u0", retain=86400)
    await store.claim(db1, pool="prod-a", node="node-1", holder="u1", retain=-1.0)
    await store.claim(web0, pool="prod-a", node="node-2", holder="u2")
    await store.claim(cache0, pool="small", node="node-2", holder="u3")
    await store.allocate(pool="small", node="node-2", owner=ephemeral_owner("c1"),
                         pod="dev/client")
    await store.unbind(db0, pool="prod-a", holder="u0")
    status, _ = await store.retain_reservation(db0, pool="prod-a")
    assert status == "ok"

    def names(*args: str) -> list[str]:
        return ok(stickyip("ipam", "show", "-o", "name", *args, url=redis_url)).splitlines()

    assert names("-n", "prod") == ["sts/prod/db/0", "sts/prod/db/1", "sts/prod/web/0"]
    assert names("--statefulset", "db") == ["sts/prod/db/0", "sts/prod/db/1", "sts/dev/db/0"]
    assert names("-n", "prod", "--statefulset", "db", "--node", "node-1") == [
        "sts/prod/db/0", "sts/prod/db/1"]
    assert names("--namespace", "dev") == ["eph/c1/eth0", "sts/dev/db/0"]
    nothing = stickyip("ipam", "show", "-n", "nowhere", url=redis_url)
    assert nothing.stdout.strip() == "no leases or reservations match"

    rows = {r["owner"]: r for r in json.loads(ok(stickyip(
        "ipam", "show", "-n", "prod", "-o", "json", url=redis_url)))}
    retained = rows["sts/prod/db/0"]
    assert retained["state"] == "retained"
    assert retained["retain"] == "24h" and retained["retainSeconds"] == 86400
    assert retained["expiresAt"].endswith("Z") and 86000 < retained["expiresIn"] <= 86400
    assert type(retained["epoch"]) is int and type(retained["ordinal"]) is int
    forever = rows["sts/prod/db/1"]
    assert (forever["retain"], forever["retainSeconds"], forever["expiresAt"]) == (
        "forever", None, None)

    table = ok(stickyip("ipam", "show", "-n", "prod", "--statefulset", "db",
                        url=redis_url)).splitlines()
    head = table[0].split()
    assert head[:10] == ["OWNER", "POOL", "KIND", "ADDRESS", "NODE", "EPOCH", "STATE",
                         "RETAIN", "EXPIRES", "POD"]
    line = dict(zip(head, table[1].split(maxsplit=8)[:8] + table[1].split()[8:], strict=False))
    assert line["RETAIN"] == "24h" and line["STATE"] == "retained"
    assert "in 23h" in table[1], "a retained reservation shows when it expires"


def complete(line: str) -> list[str]:
    """What bash completes for ``line`` (the last word is being completed)."""
    script = ok(stickyip("completion", "bash"))
    words = line.split(" ")
    program = (script + "\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + ")\n"
               f"COMP_CWORD={len(words) - 1}\n_stickyip\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    out = subprocess.run(["bash", "--norc", "--noprofile"], input=program, capture_output=True,
                         text=True, timeout=30, check=True)
    return sorted(out.stdout.split())


def test_bash_completion_knows_commands_flags_and_choices(tmp_path: Path) -> None:
    assert complete("stickyip ") == ["agent", "completion", "feed", "ipam", "pool",
                                     "scheduler", "webhook"]
    assert complete("stickyip po") == ["pool"]
    assert complete("stickyip --redis-url redis://x:1 ip") == ["ipam"]
    assert complete("stickyip ipam ") == ["blocks", "check", "history", "release", "show"]
    assert complete("stickyip ipam show --st") == ["--statefulset"]
    assert complete("stickyip ipam show -o ") == ["json", "name", "table", "wide", "yaml"]
    assert "--ignore-not-found" in complete("stickyip ipam release --")
    assert complete("stickyip --log-level w") == ["warning"]
    assert complete("stickyip completion ") == ["bash", "zsh"]
    # the components' own flags, though their modules load only when they run
    assert "--scheduler-name" in complete("stickyip webhook --sch")
    assert "--extender-port" in complete("stickyip scheduler --ext")
    (tmp_path / "pools.yaml").write_text("")
    assert complete(f"stickyip pool apply -f {tmp_path}/po") == [f"{tmp_path}/pools.yaml"]


def test_zsh_completion_uses_the_same_table() -> None:
    script = ok(stickyip("completion", "zsh"))
    assert script.startswith("#compdef stickyip\n")
    assert "bashcompinit" in script and "complete -F _stickyip stickyip" in script
    assert "'stickyip ipam') printf" in script
