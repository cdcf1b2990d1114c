"""The CNI plugin's parsing and error mapping, without an agent."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from datapath import cni, errors

CONF = {"cniVersion": "1.1.0", "name": "net", "type": "stickyip-cni"}


def _env(**kw: str) -> dict[str, str]:
    base = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/run/netns/x",
            "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p-0"}
    base.update(kw)
    return {k: v for k, v in base.items() if v != "-"}


def test_cni_args() -> None:
    assert cni.parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web-0; K8S_POD_UID=u ") == {
        "IgnoreUnknown": "1", "K8S_POD_NAME": "web-0", "K8S_POD_UID": "u"}
    assert cni.parse_cni_args("") == {}
    with pytest.raises(cni.CniFailure) as e:
        cni.parse_cni_args("novalue")
    assert e.value.code == 4


@pytest.mark.parametrize(("stdin", "code"), [
    (b"", 6), (b"[1]", 6), (b"{", 6),
    (json.dumps({"name": "n", "type": "t"}).encode(), 7),
    (json.dumps({"cniVersion": "0.2.0", "name": "n", "type": "t"}).encode(), 1),
    (json.dumps({"cniVersion": "1.0.0", "type": "t"}).encode(), 7),
])
def test_bad_config(stdin: bytes, code: int) -> None:
    rc, out = cni.run(_env(), stdin)
    assert rc == 1 and out is not None and out["code"] == code
    assert set(out) >= {"cniVersion", "code", "msg"}


@pytest.mark.parametrize("missing", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])
def test_add_needs_its_variables(missing: str) -> None:
    rc, out = cni.run(_env(**{missing: "-"}), json.dumps(CONF).encode())
    assert rc == 1 and out is not None and out["code"] == 4 and missing in out["msg"]


def test_del_does_not_need_a_netns(tmp_path: Path) -> None:
    req = cni.build_request(_env(CNI_COMMAND="DEL", CNI_NETNS="-"), dict(CONF))
    assert req["netns"] == "" and req["command"] == "DEL"


def test_status_and_gc_need_1_1_0() -> None:
    old = dict(CONF, cniVersion="1.0.0")
    for command in ("STATUS", "GC"):
        rc, out = cni.run(_env(CNI_COMMAND=command), json.dumps(old).encode())
        assert rc == 1 and out is not None and out["code"] == 1


def test_version_needs_no_agent() -> None:
    rc, out = cni.run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"1.0.0"}')
    assert rc == 0 and out == {"cniVersion": "1.0.0",
                               "supportedVersions": list(cni.SUPPORTED_VERSIONS)}


def test_no_agent_means_try_again_or_not_available(tmp_path: Path) -> None:
    conf = dict(CONF, agentSocket=str(tmp_path / "none.sock"))
    rc, out = cni.run(_env(), json.dumps(conf).encode())
    assert rc == 1 and out is not None and out["code"] == 11
    rc, out = cni.run(_env(CNI_COMMAND="STATUS"), json.dumps(conf).encode())
    assert rc == 1 and out is not None and out["code"] == 50


def test_forwards_to_the_agent_and_relays_errors(tmp_path: Path) -> None:
    path = str(tmp_path / "a.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    seen: list[dict[str, object]] = []
    replies = [{"ok": True, "result": {"ips": [{"address": "10.0.0.1/32"}]}},
               {"ok": False, "code": 101, "msg": "homed elsewhere", "details": "node-2"}]

    def serve() -> None:
        for reply in replies:
            conn, _ = srv.accept()
            seen.append(json.loads(conn.makefile("rb").readline()))
            conn.sendall(json.dumps(reply).encode() + b"\n")
            conn.close()

    t = threading.Thread(target=serve)
    t.start()
    conf = json.dumps(dict(CONF, agentSocket=path)).encode()
    rc, out = cni.run(_env(), conf)
    assert rc == 0 and out == {"ips": [{"address": "10.0.0.1/32"}], "cniVersion": "1.1.0"}
    rc, out = cni.run(_env(), conf)
    assert rc == 1 and out == {"cniVersion": "1.1.0", "code": 101, "msg": "homed elsewhere",
                               "details": "node-2"}
    t.join(5)
    srv.close()
    assert seen[0]["args"] == {"K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p-0"}
    assert seen[0]["containerId"] == "abc" and seen[0]["ifname"] == "eth0"


def test_a_0_4_0_result_names_the_family_of_each_address(tmp_path: Path) -> None:
    path = str(tmp_path / "a.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    ips = [{"address": "10.0.0.1/32", "gateway": "169.254.1.1", "interface": 1},
           {"address": "fd00::1/128", "gateway": "fe80::1", "interface": 1}]

    def serve() -> None:
        conn, _ = srv.accept()
        conn.makefile("rb").readline()
        conn.sendall(json.dumps({"ok": True, "result": {"ips": ips}}).encode() + b"\n")
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    conf = json.dumps(dict(CONF, cniVersion="0.4.0", agentSocket=path)).encode()
    rc, out = cni.run(_env(), conf)
    t.join(5)
    srv.close()
    assert rc == 0 and out is not None
    assert [(ip["address"], ip["version"]) for ip in out["ips"]] == [("10.0.0.1/32", "4"),
                                                                     ("fd00::1/128", "6")]


def test_plugin_imports_only_the_standard_library() -> None:
    code = ("import sys, datapath.cni; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('pydantic', 'redis', 'pyroute2', 'aiohttp', 'ipam', 'bcc', 'prometheus_client')];"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_installed_plugin_runs_alone_with_the_same_codes(tmp_path: Path) -> None:
    path = cni.install(str(tmp_path / "bin"))
    text = Path(path).read_text()
    assert "\nfrom datapath.errors import" not in text
    assert f"\nCNI_TRY_AGAIN = {errors.CNI_TRY_AGAIN}\n" in text
    env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1",
           "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}
    conf = json.dumps(dict(CONF, agentSocket=str(tmp_path / "none.sock"))).encode()
    out = subprocess.run([path], input=conf, env=env, capture_output=True, cwd=tmp_path,
                         check=False)
    assert out.returncode == 1, out.stderr
    reply = json.loads(out.stdout)
    assert reply["code"] == errors.CNI_TRY_AGAIN and "not running" in reply["msg"]
    version = subprocess.run([path], env={"CNI_COMMAND": "VERSION"}, capture_output=True,
                             cwd=tmp_path, check=True)
    assert "1.1.0" in json.loads(version.stdout)["supportedVersions"]
