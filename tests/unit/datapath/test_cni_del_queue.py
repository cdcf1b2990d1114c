"""The CNI deletion queue without root (issue 11.7): the plugin's DEL succeeds when no
agent answers and records the request on disk (once per attachment), fails only when
it can neither reach the agent nor write the queue; a starting agent that holds the
queue makes DEL wait and then reach it; the agent replays entries oldest first and
keeps those whose deletion failed."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from datapath import cni
from datapath.deletions import DeleteQueue


def env(command: str, cid: str = "c1") -> dict[str, str]:
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "/run/netns/x",
            "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p-0"}


def conf(tmp_path: Path, **extra: Any) -> bytes:
    return json.dumps({"cniVersion": "1.1.0", "name": "stickyip", "type": "stickyip-cni",
                       "agentSocket": str(tmp_path / "agent.sock"),
                       "deleteQueueDir": str(tmp_path / "queue"), **extra}).encode()


def test_del_without_an_agent_is_queued_and_succeeds(tmp_path: Path) -> None:
    assert cni.run(env("DEL"), conf(tmp_path)) == (0, None)
    assert cni.run(env("DEL"), conf(tmp_path)) == (0, None)
    assert cni.run(env("DEL", "c2"), conf(tmp_path)) == (0, None)
    entries = sorted(os.listdir(tmp_path / "queue"))
    assert entries == [".lock", "c1-eth0.delete", "c2-eth0.delete"]
    queued = json.loads((tmp_path / "queue" / "c1-eth0.delete").read_text())
    assert (queued["command"], queued["containerId"], queued["ifname"]) == ("DEL", "c1", "eth0")
    assert queued["args"] == {"K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p-0"}
    # ADD still says "try again": an address cannot be queued
    rc, out = cni.run(env("ADD"), conf(tmp_path))
    assert rc == 1 and out is not None and out["code"] == 11


def test_del_fails_only_when_it_cannot_queue_either(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    rc, out = cni.run(env("DEL"), conf(tmp_path, deleteQueueDir=str(tmp_path / "file" / "q")))
    assert rc == 1 and out is not None and out["code"] == 11
    assert out["msg"] == ("stickyip agent is not running on this node and the deletion could "
                          "not be queued")


def test_a_container_id_cannot_escape_the_queue(tmp_path: Path) -> None:
    assert cni.queue_entry_name("../../etc/x", "eth0") == ".._.._etc_x-eth0.delete"


def test_a_starting_agent_makes_del_wait_then_reach_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    queue = str(tmp_path / "queue")
    held = cni.lock_queue(queue, exclusive=True, wait=0)  # the agent, starting
    assert held is not None
    waiting = threading.Event()
    real_sleep = cni.time.sleep

    def sleep(seconds: float) -> None:  # the plugin is waiting for the lock
        waiting.set()
        real_sleep(seconds)

    monkeypatch.setattr(cni.time, "sleep", sleep)
    result: list[tuple[int, Any]] = []
    plugin = threading.Thread(target=lambda: result.append(cni.run(env("DEL"), conf(tmp_path))))
    plugin.start()
    assert waiting.wait(10)
    # the agent now serves, then lets go of the queue
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(tmp_path / "agent.sock"))
    srv.listen(1)
    os.close(held)
    conn, _ = srv.accept()
    request = json.loads(conn.makefile("rb").readline())
    conn.sendall(b'{"ok": true}\n')
    conn.close()
    srv.close()
    plugin.join(10)
    assert result == [(0, None)]
    assert request["command"] == "DEL" and request["containerId"] == "c1"
    assert not list(Path(queue).glob("*.delete")), "reached the agent: nothing queued"


async def test_the_agent_replays_oldest_first_and_keeps_failures(tmp_path: Path) -> None:
    qdir = str(tmp_path / "queue")
    os.makedirs(qdir)
    for cid, at in (("late", 30.0), ("early", 10.0), ("broken", 20.0)):
        cni.enqueue_delete(qdir, {"command": "DEL", "containerId": cid, "ifname": "eth0",
                                  "queuedAt": at})
    (Path(qdir) / "garbage-eth0.delete").write_text("{not json")
    done: list[str] = []

    async def delete(request: dict[str, Any]) -> None:
        if request["containerId"] == "broken":
            raise RuntimeError("store down")
        done.append(request["containerId"])

    queue = DeleteQueue(qdir)
    await queue.hold()
    assert await queue.replay(delete) == 1
    queue.release()
    assert done == ["early", "late"]
    assert [n for n in os.listdir(qdir) if n.endswith(".delete")] == ["broken-eth0.delete"]
    done.clear()
    assert await DeleteQueue(qdir).replay(delete) == 1 and done == []
