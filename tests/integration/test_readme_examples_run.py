"""The README's "Using it" examples work, together (issue 11.9): its pools file is
applied with the real ``stickyip pool apply``; its StatefulSet and the StatefulSet's
pods go through the real HTTPS webhook and get the addresses they ask for; then every
operator line of its command list runs against the same real redis-server (a line
whose comment says "refused" must be refused with one error line), and the component
lines parse with the real command line. The pool limits it states are the store's."""

from __future__ import annotations

import asyncio
import copy
import re
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from ipam import InvalidPool, RedisIpam, ReservationKey
from ipam.models import pool_from_dict
from kubestandin import KubeStandIn
from stickyip.cli import COMPONENTS, build_parser
from tests.support.admission import decoded_patch, live_webhook, review, statefulset_pod
from tests.support.cli import ROOT, stickyip_env
from tests.support.cli import stickyip as run_stickyip

SECTION = re.search(r"^## Using it\n(.*?)^## ", (ROOT / "README.md").read_text(),
                    flags=re.M | re.S)
assert SECTION is not None
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", SECTION.group(1), flags=re.M | re.S)
#: What stands for a placeholder after each flag (or a bare placeholder).
VALUES = {"--pool": "prod-a", "--node": "node-1", "-n": "prod", "--statefulset": "db",
          "--extender-port": "8888", "--metrics-port": "9401", "--port": "8443"}


def blocks(lang: str) -> list[str]:
    return [text for kind, text in BLOCKS if kind == lang]


def command_lines() -> list[tuple[list[str], str]]:
    """Every ``stickyip`` line of the sh block: its words (optional parts included,
    placeholders filled in) and its comment."""
    (sh,) = blocks("sh")
    out = []
    for line in sh.splitlines():
        text, _, comment = line.partition("#")
        words = shlex.split(text.replace("[", " ").replace("]", " "))
        if not words:
            continue
        assert words[0] == "stickyip", line
        filled = [VALUES.get(prev, word) if word.isupper() or word == "P" else word
                  for prev, word in zip(["", *words], words, strict=False)]
        out.append((filled[1:], comment.strip()))
    return out


def stickyip(url: str, cwd: Path, *args: str, kube: str = ""
             ) -> subprocess.CompletedProcess[str]:
    env = stickyip_env(STICKYIP_REDIS_URL=url, **({"STICKYIP_KUBE_HOST": kube} if kube else {}))
    return run_stickyip(*args, env=env, cwd=cwd)


async def test_the_readme_examples_work_together(redis_url: str, ipam: RedisIpam,
                                                 tmp_path: Path) -> None:
    sts_doc, pools_doc = (yaml.safe_load(b) for b in blocks("yaml"))
    (tmp_path / "pools.yaml").write_text(blocks("yaml")[1])
    applied = stickyip(redis_url, tmp_path, "pool", "apply", "-f", "pools.yaml")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [f"pool/{p['name']} created"
                                           for p in pools_doc["pools"]]

    sts = copy.deepcopy(sts_doc)
    sts["metadata"]["uid"] = str(uuid.uuid4())  # as the API server sets it
    ips = sts["spec"]["template"]["metadata"]["annotations"]["stickyip.io/ips"]
    first, last = ips.split("-")
    wanted = [f"{first.rsplit('.', 1)[0]}.{n}"
              for n in range(int(first.rsplit(".", 1)[1]), int(last.rsplit(".", 1)[1]) + 1)]
    assert len(wanted) == sts["spec"]["replicas"]
    async with live_webhook(ipam, str(tmp_path)) as (_, client, _):
        status, answer = await client.post("/validate-statefulsets", review(sts))
        assert status == 200, answer
        assert answer["response"]["allowed"] is True, answer["response"].get("status")
        for ordinal, address in enumerate(wanted):
            status, answer = await client.post("/mutate-pods",
                                               review(statefulset_pod(sts, ordinal)))
            assert status == 200 and answer["response"]["allowed"] is True, answer
            ops: dict[str, Any] = {op["path"]: op.get("value") for op in decoded_patch(answer)}
            assert ops["/metadata/annotations/stickyip.io~1ip"] == address

    # db-2's pod runs on node-1 (as the agent records it), so releasing it is refused
    await ipam.claim(ReservationKey.of("prod", "db", 2), pool="prod-a", node="node-1",
                     holder="uid-db-2", pod="prod/db-2")
    ran = set()
    async with KubeStandIn(statefulset_controller=False) as api:  # --against-cluster
        for words, comment in command_lines():
            if words[0] in {name for name, _, _ in COMPONENTS}:
                build_parser(words).parse_args(words)  # exits (fails the test) on a bad flag
                continue
            proc = await asyncio.to_thread(stickyip, redis_url, tmp_path, *words,
                                           kube=api.url)
            _judge(words, comment, proc)
            ran.add(" ".join(words[:2]))
    assert {"pool apply", "pool list", "pool delete", "ipam show", "ipam blocks",
            "ipam history", "ipam release", "ipam check", "completion bash"} <= ran
    quarantined = await ipam.reservation(ReservationKey.of("prod", "db", 2))
    assert quarantined is not None and quarantined.state.value == "quarantined"


def _judge(words: list[str], comment: str, proc: subprocess.CompletedProcess[str]) -> None:
    """A line whose comment says it is refused fails with one error line; others work."""
    if comment.startswith("refused"):
        assert proc.returncode == 1, (words, proc.stdout)
        (line,) = proc.stderr.splitlines()
        assert line.startswith("error: "), (words, line)
    else:
        assert proc.returncode == 0, (words, proc.stderr)


def test_the_stated_pool_limits_are_the_stores() -> None:
    text = SECTION.group(1)
    stated = re.search(r"an IPv4 pool is a /(\d+) to a /(\d+), cut into blocks of /(\d+) to "
                       r"/(\d+); an IPv6 pool is\na /(\d+) to a /(\d+), cut into blocks of "
                       r"/(\d+) to /(\d+)", text)
    assert stated is not None
    v4_pool, v4_small, v4_block, v4_last, v6_pool, v6_small, v6_block, v6_last = (
        int(x) for x in stated.groups())
    for net, largest, smallest, block, last in (
            ("10.0.0.0", v4_pool, v4_small, v4_block, v4_last),
            ("fd00::", v6_pool, v6_small, v6_block, v6_last)):
        pool_from_dict({"name": "a", "cidr": f"{net}/{largest}", "blockSize": block})
        pool_from_dict({"name": "a", "cidr": f"{net}/{smallest}", "blockSize": last})
        with pytest.raises(InvalidPool):
            pool_from_dict({"name": "a", "cidr": f"{net}/{largest - 1}", "blockSize": block})
        with pytest.raises(InvalidPool):
            pool_from_dict({"name": "a", "cidr": f"{net}/{largest}", "blockSize": block - 1})
    with pytest.raises(InvalidPool):
        pool_from_dict({"name": "a", "cidr": "10.0.0.0/28"})  # the default /26 is larger
    pool_from_dict({"name": "a", "cidr": "10.0.0.0/28", "blockSize": 28})
    assert "holds at most 65,536 addresses" in text and 2 ** (v4_last - v4_block) == 65536
