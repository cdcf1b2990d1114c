"""Errors a person can act on (issue 11.6), beyond the Kubernetes ones: a pools file
that is missing or not YAML, a malformed or unreachable Redis URL, a port out of
range, a port already taken, an unknown flag: one line that says what is wrong (and
where, for a file), a non-zero exit status, never a traceback."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.admission import Certs
from tests.support.cli import one_error_line, stickyip, stickyip_env
from tests.support.redis_server import free_port


def run(args: list[str], tmp_path: Path, stdin: str | None = None,
        **settings: str) -> subprocess.CompletedProcess[str]:
    return stickyip(*args, env=stickyip_env(tmp_path / "home", **settings), stdin=stdin)


def test_a_pools_file_that_does_not_exist(tmp_path: Path, redis_url: str) -> None:
    proc = run(["--redis-url", redis_url, "pool", "apply", "-f", str(tmp_path / "no.yaml")],
               tmp_path)
    assert one_error_line(proc) == (f"error: cannot read pools file '{tmp_path}/no.yaml': "
                                "No such file or directory")
    assert proc.returncode == 1


def test_a_pools_file_that_is_not_yaml_says_where(tmp_path: Path, redis_url: str) -> None:
    f = tmp_path / "pools.yaml"
    f.write_text("pools:\n  - name: a\n    cidr: [10.0.0.0/8\n")
    proc = run(["--redis-url", redis_url, "pool", "apply", "-f", str(f)], tmp_path)
    assert one_error_line(proc).startswith(f"error: {f}: line 4, column 1: not valid YAML: ")


def test_every_unknown_key_of_a_pools_file_is_listed(tmp_path: Path, redis_url: str) -> None:
    proc = run(["--redis-url", redis_url, "pool", "apply", "-f", "-"], tmp_path,
               stdin="- {name: a, cidr: 10.1.0.0/24, blocksize: 28}\n"
                     "- {name: b, cidr: 10.2.0.0/24, nodeSelecter: {zone: a}}\n")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "error: <stdin> has 2 problems (nothing was applied):",
        "  line 1, column 32: pool 'a': unknown key 'blocksize' (did you mean 'blockSize'?)",
        "  line 2, column 32: pool 'b': unknown key 'nodeSelecter' (did you mean "
        "'nodeSelector'?)"]


@pytest.mark.parametrize(("url", "says"), [
    ("redis://127.0.0.1:port/0", "error: invalid Redis URL 'redis://127.0.0.1:port/0': "),
    ("localhost:6379", "error: invalid Redis URL 'localhost:6379': "),
    ("redis+sentinel://127.0.0.1:26379", "error: invalid sentinel URL "),
    ("redis://127.0.0.1:{port}/0", "error: cannot reach Redis at redis://127.0.0.1:{port}/0: "),
])
def test_a_bad_store_url(tmp_path: Path, url: str, says: str) -> None:
    port = str(free_port())
    for args in (["--redis-url", url.format(port=port), "pool", "list"],
                 ["ipam", "show", "--redis-url", url.format(port=port)]):
        proc = run(args, tmp_path)
        assert one_error_line(proc).startswith(says.format(port=port))
        assert proc.returncode == 1


@pytest.mark.parametrize(("args", "says"), [
    (["scheduler", "--metrics-port", "-1"],
     "error: invalid metrics_port (SchedulerSettings): Input should be greater than or equal "
     "to 0, got -1"),
    (["scheduler", "--extender-port", "65536"],
     "error: invalid extender_port (SchedulerSettings): Input should be less than or equal "
     "to 65535, got 65536"),
    (["agent", "--node", "n1", "--metrics-port", "-1"],
     "error: invalid metrics_port (AgentSettings): Input should be greater than or equal to 0, "
     "got -1"),
])
def test_a_port_out_of_range(tmp_path: Path, args: list[str], says: str) -> None:
    proc = run(args, tmp_path, STICKYIP_REDIS_URL="redis://127.0.0.1:1/0")
    assert one_error_line(proc) == says
    assert proc.returncode == 2


def test_a_port_already_taken(tmp_path: Path, redis_url: str) -> None:
    certs = Certs(str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run(["webhook", "--cert", certs.cert_file, "--key", certs.key_file,
                    "--host", "127.0.0.1", "--port", str(port), "--no-kube"], tmp_path,
                   STICKYIP_REDIS_URL=redis_url)
    line = one_error_line(proc)
    assert line.startswith("error: ") and "address already in use" in line
    assert proc.returncode == 1


@pytest.mark.parametrize("args", [
    ["pool", "list", "--bogus"], ["pool", "list", "-o", "xml"], ["ipam"], ["nonsense"],
    ["webhook", "--port", "eighty"],
])
def test_a_bad_flag_is_a_usage_line(tmp_path: Path, args: list[str]) -> None:
    proc = run(args, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("stickyip")
    assert ": error: " in proc.stderr.splitlines()[-1]
