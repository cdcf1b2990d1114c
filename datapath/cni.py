"""``stickyip-cni``: the CNI plugin (spec 1.0.0 and 1.1.0), a thin client of the node
agent. It parses the environment and the network config, answers VERSION itself and
forwards everything else over the agent's unix socket.

DEL never blocks teardown: when the agent cannot be reached (not running, restarting,
no answer) the deletion is written to a queue on the node's disk and DEL succeeds; the
agent replays the queue when it starts (Cilium's CNI deletion queue is the model). A
shared ``flock`` on the queue, which the starting agent holds exclusively until it
serves, closes the window in which an entry could be written after the agent read the
queue. ADD still answers "try again" (11) while the agent is down.

Started by the container runtime for every pod, so it imports only the standard
library (fcntl, json, os, socket, sys, time) and the import-free
:mod:`datapath.errors` for its error codes: no pydantic, redis or pyroute2 on this
path. It is also installed as a standalone script run with ``python -S`` (see
:func:`install`, which writes the codes in place of that import), which skips
site-packages start-up entirely.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time

from datapath.errors import (
    CNI_DECODE_FAILURE,
    CNI_INCOMPATIBLE_VERSION,
    CNI_INVALID_CONFIG,
    CNI_INVALID_ENV,
    CNI_NOT_AVAILABLE,
    CNI_TRY_AGAIN,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on every pod start
    from collections.abc import Mapping
    from typing import Any

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
#: Commands that exist only from 1.1.0 on.
V11_COMMANDS = ("STATUS", "GC")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
DEFAULT_SOCKET = "/run/stickyip/agent.sock"
#: The interpreter an installed plugin runs on: the node's own Python (3.7 or later),
#: as the DaemonSet's init container, the agent's --cni-bin-dir and the benchmarks
#: install it alike.
NODE_PYTHON = "/usr/bin/python3"
DEFAULT_TIMEOUT = 60.0
#: The deletion queue: one ``<container>-<ifname>.delete`` file (the DEL request as
#: JSON) per deletion the agent could not take; ``.lock`` is flock'ed shared by the
#: plugin and exclusively by the agent from its start until it serves.
DEFAULT_DELETE_QUEUE = "/var/lib/stickyip/cni-delete-queue"
QUEUE_SUFFIX = ".delete"
QUEUE_LOCK = ".lock"
#: Seconds DEL waits for a starting agent to finish its start (it then queues anyway).
QUEUE_LOCK_WAIT = 30.0


class CniFailure(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


def parse_cni_args(text: str) -> dict[str, str]:
    """``CNI_ARGS``: ``K=V;K2=V2`` (IgnoreUnknown=1 and friends included)."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise CniFailure(CNI_INVALID_ENV, f"CNI_ARGS is malformed: {part!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def parse_config(raw: bytes | str) -> dict[str, Any]:
    try:
        conf = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise CniFailure(CNI_DECODE_FAILURE, "network configuration on stdin is not valid JSON",
                         str(e)) from e
    if not isinstance(conf, dict):
        raise CniFailure(CNI_DECODE_FAILURE, "network configuration must be a JSON object")
    return conf


def check_config(conf: Mapping[str, Any], command: str) -> str:
    """Validate the network config for ``command``; returns its cniVersion."""
    version = conf.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniFailure(CNI_INVALID_CONFIG, "network configuration has no cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniFailure(CNI_INCOMPATIBLE_VERSION, f"cniVersion {version} is not supported",
                         f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    if command in V11_COMMANDS and _vtuple(version) < (1, 1, 0):
        raise CniFailure(CNI_INCOMPATIBLE_VERSION,
                         f"{command} needs cniVersion 1.1.0, got {version}")
    for key in ("name", "type"):
        if not isinstance(conf.get(key), str) or not conf.get(key):
            raise CniFailure(CNI_INVALID_CONFIG, f"network configuration has no {key!r}")
    for key in ("agentSocket", "deleteQueueDir"):
        value = conf.get(key)
        if value is not None and not isinstance(value, str):
            raise CniFailure(CNI_INVALID_CONFIG, f"{key!r} must be a string path")
    return version


def _vtuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (0,)


def build_request(env: Mapping[str, str], conf: dict[str, Any]) -> dict[str, Any]:
    """The agent request for ``env['CNI_COMMAND']`` (not VERSION); checks the variables
    each command needs (code 4 when missing)."""
    command = env.get("CNI_COMMAND", "")
    need = {"ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
            "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
            "DEL": ("CNI_CONTAINERID", "CNI_IFNAME")}.get(command, ())
    missing = [k for k in need if not env.get(k)]
    if missing:
        raise CniFailure(CNI_INVALID_ENV, f"missing environment variable(s) for {command}: "
                         + ", ".join(missing))
    ifname = env.get("CNI_IFNAME", "")
    if ifname and (len(ifname) > 15 or "/" in ifname or ifname in (".", "..")
                   or any(c.isspace() for c in ifname)):
        raise CniFailure(CNI_INVALID_ENV, f"CNI_IFNAME {ifname!r} is not a valid interface name")
    return {
        "command": command,
        "containerId": env.get("CNI_CONTAINERID", ""),
        "netns": env.get("CNI_NETNS", ""),
        "ifname": ifname,
        "args": parse_cni_args(env.get("CNI_ARGS", "")),
        "path": env.get("CNI_PATH", ""),
        "config": conf,
    }


def socket_path(env: Mapping[str, str], conf: Mapping[str, Any]) -> str:
    return str(conf.get("agentSocket") or env.get("STICKYIP_AGENT_SOCKET") or DEFAULT_SOCKET)


def delete_queue_dir(env: Mapping[str, str], conf: Mapping[str, Any]) -> str:
    return str(conf.get("deleteQueueDir") or env.get("STICKYIP_DELETE_QUEUE_DIR")
               or DEFAULT_DELETE_QUEUE)


def queue_entry_name(container_id: str, ifname: str) -> str:
    """The file of one attachment's queued deletion (a later DEL of the same
    attachment replaces it: DEL is idempotent)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in container_id)
    return f"{safe}-{ifname}{QUEUE_SUFFIX}"


def lock_queue(directory: str, *, exclusive: bool, wait: float) -> int | None:
    """Open and flock the queue's lock file (created with the directory if needed);
    the open descriptor, or None when the lock was not had within ``wait`` seconds.
    Closing the descriptor releases the lock."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(directory, QUEUE_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, mode)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)  # a starting agent holds it for seconds at most


def enqueue_delete(directory: str, request: Mapping[str, Any]) -> str:
    """Write a DEL request into the queue, atomically; returns the entry's path."""
    path = os.path.join(directory, queue_entry_name(str(request["containerId"]),
                                                    str(request["ifname"])))
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"queuedAt": time.time(), **request}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def delete(env: Mapping[str, str], conf: Mapping[str, Any], request: dict[str, Any]
           ) -> None:
    """DEL: the agent deletes, or (when it cannot be reached) the queue records it."""
    path = socket_path(env, conf)
    queue = delete_queue_dir(env, conf)
    try:
        lock = lock_queue(queue, exclusive=False, wait=QUEUE_LOCK_WAIT)
    except OSError:
        lock = None  # no queue to lock: the agent may still answer
    try:
        try:
            reply = call_agent(path, request)
        except (OSError, ValueError) as e:
            try:
                enqueue_delete(queue, request)
            except OSError as q:
                raise CniFailure(CNI_TRY_AGAIN, "stickyip agent is not running on this node "
                                 "and the deletion could not be queued",
                                 f"{path}: {e}; {queue}: {q.strerror}") from q
            return  # the agent releases the address when it starts
    finally:
        if lock is not None:
            os.close(lock)
    if not reply.get("ok"):
        raise CniFailure(int(reply.get("code", 999)), str(reply.get("msg", "agent error")),
                         str(reply.get("details", "")))


def call_agent(path: str, request: Mapping[str, Any], *,
               timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Send one request line, read one reply line."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    reply = json.loads(buf)
    if not isinstance(reply, dict):
        raise ValueError("agent reply is not an object")
    return reply


def version_result(version: str = "1.1.0") -> dict[str, Any]:
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def error_result(version: str, code: int, msg: str, details: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": version, "code": code, "msg": msg}
    if details:
        out["details"] = details
    return out


def run(env: Mapping[str, str], stdin: bytes) -> tuple[int, dict[str, Any] | None]:
    """The whole plugin as a function: returns (exit code, JSON to print or None)."""
    version = "1.1.0"
    try:
        command = env.get("CNI_COMMAND", "")
        if not command:
            raise CniFailure(CNI_INVALID_ENV, "CNI_COMMAND is not set")
        if command not in COMMANDS:
            raise CniFailure(CNI_INVALID_ENV, f"unknown CNI_COMMAND {command!r}")
        if command == "VERSION":
            if stdin.strip():
                conf = parse_config(stdin)
                v = conf.get("cniVersion")
                if isinstance(v, str) and v in SUPPORTED_VERSIONS:
                    version = v
            return 0, version_result(version)
        conf = parse_config(stdin)
        if isinstance(conf.get("cniVersion"), str):
            version = conf["cniVersion"]
        version = check_config(conf, command)
        request = build_request(env, conf)
        if command == "DEL":
            delete(env, conf, request)
            return 0, None
        path = socket_path(env, conf)
        try:
            reply = call_agent(path, request)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            code = CNI_NOT_AVAILABLE if command == "STATUS" else CNI_TRY_AGAIN
            raise CniFailure(code, "stickyip agent is not running on this node",
                             f"{path}: {e.strerror}") from e
        except (OSError, ValueError) as e:
            raise CniFailure(CNI_TRY_AGAIN, "stickyip agent did not answer", str(e)) from e
        if not reply.get("ok"):
            raise CniFailure(int(reply.get("code", 999)), str(reply.get("msg", "agent error")),
                             str(reply.get("details", "")))
        result = reply.get("result")
        if command == "ADD" and isinstance(result, dict):
            result["cniVersion"] = version
            if _vtuple(version) < (1, 0, 0):
                # 0.3/0.4 results name each address's family
                for ip in result.get("ips") or []:
                    ip["version"] = "6" if ":" in str(ip.get("address", "")) else "4"
            return 0, result
        return 0, None
    except CniFailure as f:
        return 1, error_result(version, f.code, f.msg, f.details)


def standalone_text() -> str:
    """This module as one self-contained script: the import of error codes replaced
    by their values, so it runs without the ``datapath`` package on the path."""
    import re

    from datapath import errors

    with open(__file__, encoding="utf-8") as f:
        body = f.read()
    found = re.search(r"^from datapath\.errors import \(([^)]*)\)\n", body, flags=re.M)
    if found is None:
        raise RuntimeError(f"{__file__}: no error-code import to inline")
    names = [n.strip() for n in found.group(1).split(",") if n.strip()]
    codes = "".join(f"{n} = {getattr(errors, n)!r}\n" for n in names)
    return body[:found.start()] + codes + body[found.end():]


def install(dest_dir: str, *, python: str = NODE_PYTHON) -> str:
    """Install this module as ``DEST/stickyip-cni``, run by ``python -S`` (no site, no
    venv: the plugin needs only the standard library). Atomic; returns the path."""
    body = standalone_text()
    interpreter = python
    path = os.path.join(dest_dir, "stickyip-cni")
    tmp = f"{path}.tmp{os.getpid()}"
    os.makedirs(dest_dir, exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"#!{interpreter} -S\n" + body)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return path


def main() -> None:
    stdin = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
    code, out = run(os.environ, stdin)
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
