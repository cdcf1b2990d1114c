"""The real ``stickyip-cni`` binary against a real agent: each CNI verb and each
malformed call gets the spec's success or error (code, JSON, non-zero exit)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from netbed.testbed import Testbed

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tb() -> AsyncIterator[Testbed]:
    async with Testbed(nodes=1) as bed:
        yield bed


def _args(name: str) -> str:
    return f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_UID=u-{name}"


async def test_add_returns_a_spec_result_and_the_pod_is_plumbed(tb: Testbed) -> None:
    pod = await tb.add_pod("node-1", "default", "plain")
    res = pod.result
    assert res["cniVersion"] == "1.1.0"
    assert res["ips"][0]["address"].endswith("/32")
    assert res["ips"][0]["gateway"] == "169.254.1.1"
    assert res["interfaces"][res["ips"][0]["interface"]]["sandbox"] == pod.netns_path
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    addr = tb.exec_in(pod, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout.decode()
    assert pod.address + "/32" in addr
    route = tb.exec_in(pod, ["ip", "route", "show", "default"]).stdout.decode()
    assert "via 169.254.1.1 dev eth0" in route
    # The node reaches the pod through its host route.
    assert await tb.ping("node-1", pod.address)


async def test_add_of_an_existing_interface_fails(tb: Testbed) -> None:
    pod = await tb.add_pod("node-1", "default", "twice")
    again = tb.cni("node-1", "ADD", container_id=pod.container_id, netns=pod.netns_path,
                   args=_args("twice"))
    assert again.rc != 0 and again.out is not None
    assert again.out["code"] == 100 and "exists" in again.out["msg"]
    # Another container whose netns already holds eth0 fails the same way.
    other = tb.cni("node-1", "ADD", container_id="other-container", netns=pod.netns_path,
                   args=_args("twice-b"))
    assert other.rc != 0 and other.out is not None and other.out["code"] == 100
    # ...and the failed ADD leaked no address.
    assert await tb.ipam.lease(pool=tb.pool, owner="eph/other-container/eth0") is None  # type: ignore[arg-type]
    assert tb.cni("node-1", "CHECK", container_id=pod.container_id, netns=pod.netns_path,
                  conf=tb.netconf("node-1", prevResult=pod.result)).rc == 0


async def test_del_is_idempotent_and_frees_the_lease(tb: Testbed) -> None:
    pod = await tb.add_pod("node-1", "default", "gone")
    owner = f"eph/{pod.container_id}/eth0"
    assert await tb.ipam.lease(pool=tb.pool, owner=owner) is not None  # type: ignore[arg-type]
    first = await tb.del_pod(pod, remove_netns=False)
    assert (first.rc, first.out) == (0, None)
    second = tb.cni("node-1", "DEL", container_id=pod.container_id, netns=pod.netns_path)
    assert (second.rc, second.out) == (0, None)
    assert await tb.ipam.lease(pool=tb.pool, owner=owner) is None  # type: ignore[arg-type]
    links = tb.exec_in("node-1", ["ip", "-o", "link"]).stdout.decode()
    assert pod.result["interfaces"][0]["name"] not in links


async def test_del_without_netns_succeeds(tb: Testbed) -> None:
    pod = await tb.add_pod("node-1", "default", "nonetns")
    tb.exec_in("node-1", ["true"])
    call = tb.cni("node-1", "DEL", container_id=pod.container_id, netns="")
    assert (call.rc, call.out) == (0, None), call
    never = tb.cni("node-1", "DEL", container_id="never-added", netns="")
    assert (never.rc, never.out) == (0, None)


async def test_garbage_stdin_is_a_decode_failure(tb: Testbed) -> None:
    call = tb.cni("node-1", "ADD", container_id="x1", netns="/run/netns/none",
                  stdin=b"{not json")
    assert call.rc != 0 and call.out is not None
    assert call.out["code"] == 6 and {"cniVersion", "code", "msg"} <= set(call.out)


@pytest.mark.parametrize("drop", ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])
async def test_missing_environment_is_code_4(tb: Testbed, drop: str) -> None:
    netns = tb.new_pod_netns()
    call = tb.cni("node-1", "ADD", container_id="envtest", netns=f"/run/netns/{netns}",
                  args=_args("envtest"), drop_env=[drop])
    assert call.rc != 0 and call.out is not None and call.out["code"] == 4, call


async def test_bad_config_and_versions(tb: Testbed) -> None:
    conf = tb.netconf("node-1")
    del conf["type"]
    call = tb.cni("node-1", "ADD", container_id="c", netns="/run/netns/x", conf=conf)
    assert call.out is not None and call.out["code"] == 7
    old = tb.netconf("node-1", cniVersion="0.1.0")
    call = tb.cni("node-1", "ADD", container_id="c", netns="/run/netns/x", conf=old)
    assert call.out is not None and call.out["code"] == 1
    status_10 = tb.cni("node-1", "STATUS", conf=tb.netconf("node-1", cniVersion="1.0.0"))
    assert status_10.out is not None and status_10.out["code"] == 1


async def test_version_status_and_unreachable_agent(tb: Testbed) -> None:
    v = tb.cni("node-1", "VERSION", stdin=b"")
    assert v.rc == 0 and v.out is not None
    assert {"1.0.0", "1.1.0"} <= set(v.out["supportedVersions"])
    ok = tb.cni("node-1", "STATUS")
    assert (ok.rc, ok.out) == (0, None)
    nowhere = tb.netconf("node-1", agentSocket=str(tb.dir / "no-agent.sock"))
    down = tb.cni("node-1", "STATUS", conf=nowhere)
    assert down.rc != 0 and down.out is not None and down.out["code"] == 50
    add = tb.cni("node-1", "ADD", container_id="c", netns="/run/netns/x", ifname="eth0",
                 conf=nowhere)
    assert add.out is not None and add.out["code"] == 11


async def test_check_detects_a_broken_attachment(tb: Testbed) -> None:
    pod = await tb.add_pod("node-1", "default", "checked")
    conf = tb.netconf("node-1", prevResult=pod.result)
    assert tb.cni("node-1", "CHECK", container_id=pod.container_id, netns=pod.netns_path,
                  conf=conf).rc == 0
    tb.exec_in(pod, ["ip", "route", "del", "default"], check=True)
    bad = tb.cni("node-1", "CHECK", container_id=pod.container_id, netns=pod.netns_path,
                 conf=conf)
    assert bad.rc != 0 and bad.out is not None and bad.out["code"] == 102
    unknown = tb.cni("node-1", "CHECK", container_id="nobody", netns=pod.netns_path, conf=conf)
    assert unknown.out is not None and unknown.out["code"] == 3


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
async def test_gc_removes_attachments_not_listed(tb: Testbed, key: str) -> None:
    keep = await tb.add_pod("node-1", "gc", f"keep-{key[8:13]}")
    drop = await tb.add_pod("node-1", "gc", f"drop-{key[8:13]}")
    listed = await tb.ipam.all_records(tb.pool)
    valid = [{"containerID": p.container_id, "ifname": p.ifname}
             for p in list(tb.pods.values()) if p is not drop]
    assert any(r.owner == f"eph/{drop.container_id}/eth0" for r in listed)
    call = tb.cni("node-1", "GC", conf=tb.netconf("node-1", **{key: valid}))
    assert (call.rc, call.out) == (0, None), call
    owners = {r.owner for r in await tb.ipam.all_records(tb.pool)}
    assert f"eph/{drop.container_id}/eth0" not in owners
    assert f"eph/{keep.container_id}/eth0" in owners
    eps = tb.agent_call("node-1", {"command": "ENDPOINTS"})["result"]["endpoints"]
    assert {e["container_id"] for e in eps} >= {keep.container_id}
    assert drop.container_id not in {e["container_id"] for e in eps}
    tb.pods.pop(f"{drop.namespace}/{drop.name}", None)
    assert json.dumps(call.out) == "null"
