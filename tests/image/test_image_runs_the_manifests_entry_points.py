"""Every entry point the rendered manifests run, run inside the image ``make image``
built (``buildah run``): the stickyip command lines of every container, the agent's
hooks, the CNI install step and the plugin it installs, BIRD on the agent's
generated config, Redis with the manifests' arguments, and a bcc compile and load of
the datapath programs against the host's kernel headers, mounted as the DaemonSet
mounts them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.image.conftest import ROOT, Container, Image
from tests.unit.manifests.conftest import INSTALLS, agent_cni_install, find, rendered
from tests.unit.manifests.test_manifest_invariants import (
    EXTERNAL_IMAGES,
    containers,
    named_container,
    pod_specs,
)

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
#: Values for the $(VAR) references of the manifests' command lines.
SUBSTITUTE = {"NODE_NAME": "node-1", "STICKYIP_STORE_SERVICE_HOST": "10.96.0.10",
              "STICKYIP_STORE_SERVICE_PORT": "6379"}
Obj = dict[str, Any]


def _subst(arg: str) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: SUBSTITUTE[m.group(1)], arg)


def _user(pod: Obj, c: Obj) -> str:
    """The user Kubernetes runs the container as (the image's when unset)."""
    uid = (c.get("securityContext") or {}).get("runAsUser",
                                                (pod.get("securityContext") or {}).get("runAsUser"))
    return "65532:65532" if uid is None else f"{uid}:{uid}"


def _our_containers() -> list[tuple[str, Obj, Obj]]:
    """(install, pod, container) of every distinct container running our image."""
    seen: set[str] = set()
    out = []
    for name in INSTALLS:
        for _, pod in pod_specs(rendered(name)):
            for c in containers(pod):
                if c["image"] in EXTERNAL_IMAGES:
                    continue
                key = json.dumps([c.get("command"), c.get("args"), _user(pod, c)])
                if key not in seen:
                    seen.add(key)
                    out.append((name, pod, c))
    return out


def _id(case: tuple[str, Obj, Obj]) -> str:
    return f"{case[0]}-{case[2]['name']}"


def test_the_manifests_run_the_image_that_was_built(image: Image) -> None:
    assert image.ref == f"localhost/stickyip:{VERSION}"
    refs = {c["image"] for name in INSTALLS for _, pod in pod_specs(rendered(name))
            for c in containers(pod)} - EXTERNAL_IMAGES
    assert refs == {image.ref}


def test_stickyip_version_is_the_projects(container: Container) -> None:
    assert container.ok("stickyip", "--version").strip() == f"stickyip {VERSION}"


@pytest.mark.parametrize("case", _our_containers(), ids=_id)
def test_every_container_command_exists_in_the_image(
        case: tuple[str, Obj, Obj], container: Container) -> None:
    _, pod, c = case
    assert c.get("command"), f"{c['name']}: set command explicitly (the image's is --help)"
    container.ok("sh", "-c", f'command -v "{c["command"][0]}"', user=_user(pod, c))


@pytest.mark.parametrize("case", [x for x in _our_containers()
                                  if x[2].get("command") == ["stickyip"]], ids=_id)
def test_stickyip_command_lines_parse_in_the_image(
        case: tuple[str, Obj, Obj], container: Container) -> None:
    """The exact arguments (and user) of the container, plus --help: argparse exits 0
    only when every option before it exists."""
    _, pod, c = case
    args = [_subst(a) for a in c["args"]]
    out = container.ok("stickyip", *args, "--help", user=_user(pod, c))
    command = next(a for a in args if not a.startswith("-"))
    assert f"usage: stickyip {command}" in out.replace("\n", " ")


def test_the_agents_hooks_load_in_the_image(container: Container) -> None:
    for name in INSTALLS:
        agent = named_container(find(rendered(name), "DaemonSet", "stickyip-agent")["spec"][
            "template"]["spec"], "agent")
        hooks = [agent["args"][i + 1] for i, a in enumerate(agent["args"]) if a == "--hook"]
        for spec in hooks:
            module, _, attr = spec.partition(":")
            container.ok("python3", "-c", "import importlib, sys; "
                         f"f = getattr(importlib.import_module({module!r}), {attr!r}); "
                         "sys.exit(not callable(f))")


def _install_cni(tmp_path: Path, container: Container) -> tuple[Path, Obj]:
    """Runs the agent's init container in the image on scratch node directories."""
    pod, init, conflist = agent_cni_install(rendered("default"))
    host = {v["name"]: tmp_path / v["name"] for v in pod["volumes"]}
    (tmp_path / "cni-config").mkdir()
    (tmp_path / "cni-config" / "10-stickyip.conflist").write_text(conflist)
    volumes = []
    for m in init["volumeMounts"]:
        host[m["name"]].mkdir(exist_ok=True)
        volumes.append(f"{host[m['name']]}:{m['mountPath']}" + (":ro" if m.get("readOnly") else ""))
    container.ok(*init["command"], *init["args"], user=_user(pod, init), volumes=volumes)
    return host["cni-bin"], json.loads(conflist)


def test_the_cni_install_step_installs_a_plugin_that_answers_version(
        tmp_path: Path, container: Container) -> None:
    bin_dir, conf = _install_cni(tmp_path, container)
    assert sorted(p.name for p in bin_dir.iterdir()) == ["stickyip-cni"]
    plugin = bin_dir / "stickyip-cni"
    assert os.access(plugin, os.X_OK)
    stdin = json.dumps({"cniVersion": conf["cniVersion"], "name": conf["name"],
                        **conf["plugins"][0]})
    # Through the installed file, as the runtime runs it: in the image...
    out = container.ok("/cni/stickyip-cni", volumes=[f"{bin_dir}:/cni:ro"],
                       env={"CNI_COMMAND": "VERSION"}, stdin=stdin)
    assert conf["cniVersion"] in json.loads(out)["supportedVersions"]
    # ...and on a node: this machine's own python3, only the CNI environment.
    done = subprocess.run([str(plugin)], input=stdin, capture_output=True, text=True,
                          timeout=60, env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert conf["cniVersion"] in json.loads(done.stdout)["supportedVersions"]


def test_bird_starts_on_the_sidecars_placeholder_and_the_agents_config(
        tmp_path: Path, container: Container) -> None:
    assert "BIRD version 2." in container.ok("bird", "--version")
    pod = find(rendered("bgp"), "DaemonSet", "stickyip-agent")["spec"]["template"]["spec"]
    bird = named_container(pod, "bird")
    volumes = []
    for m in bird["volumeMounts"]:
        (tmp_path / m["name"]).mkdir()
        volumes.append(f"{tmp_path / m['name']}:{m['mountPath']}")
    # The sidecar's own script, with BIRD parsing its config and exiting (-p)
    # instead of running in the foreground.
    script = bird["args"][0].replace("exec bird -f ", "exec bird -p ")
    assert script != bird["args"][0]
    container.ok(*bird["command"], script, user=_user(pod, bird), volumes=volumes)
    assert "protocol device" in (tmp_path / "run" / "bird.conf").read_text()
    # What the agent generates (datapath/bird.py) parses with the image's BIRD.
    # (dual-stack: the IPv6 static, kernel and session half parses too)
    generate = ("import ipaddress as ip; from datapath import bird; "
                "print(bird.render(bird.config_of(router_id='192.0.2.1', asn=64512, "
                "blocks=[ip.ip_network('10.20.0.0/26'), ip.ip_network('fd00:20::/122')], "
                "migrated=[ip.ip_address('10.20.1.7'), ip.ip_address('fd00:20:1::7')], "
                "peers={'node-2': {4: '192.0.2.2', 6: '2001:db8::2'}, "
                "'node-3': {4: '192.0.2.3'}}, self_node='node-1', ipv6=True, "
                "external=[bird.parse_peer('192.0.2.254 64513'), "
                "bird.parse_peer('2001:db8::fe 64513')])))")
    text = container.ok("python3", "-c", generate)
    assert "neighbor 192.0.2.254 as 64513;" in text
    assert "neighbor 2001:db8::2 as 64512;" in text and "stickyip_kernel6" in text
    (tmp_path / "run" / "bird.conf").write_text(text)
    container.ok(*bird["command"], script, user=_user(pod, bird), volumes=volumes)


def test_redis_accepts_the_manifests_arguments(tmp_path: Path, container: Container) -> None:
    sts = find(rendered("default"), "StatefulSet", "stickyip-redis")
    pod = sts["spec"]["template"]["spec"]
    redis = named_container(pod, "redis")
    data = tmp_path / "data"
    data.mkdir()
    uid = int(_user(pod, redis).split(":")[0])
    os.chown(data, uid, uid)
    # Its real arguments on a unix socket (no TCP port here), then a PING.
    cmd = " ".join([*redis["command"], *redis["args"], "--port", "0", "--unixsocket",
                    "/data/r.sock", "--daemonize", "yes", "--pidfile", "/data/r.pid"])
    out = container.ok("sh", "-ec", f"{cmd}; for i in $(seq 100); do "
                       "redis-cli -s /data/r.sock ping 2>/dev/null && break; sleep 0.1; done; "
                       "redis-cli -s /data/r.sock config get appendonly; "
                       "redis-cli -s /data/r.sock shutdown nosave || true",
                       user=_user(pod, redis), volumes=[f"{data}:/data"])
    assert "PONG" in out and "appendonly\nyes" in out


@pytest.fixture
def pin_dir() -> Any:
    """A pin directory of our own on the host's bpffs, removed even on failure."""
    path = Path("/sys/fs/bpf") / f"stickyip-imagetest-{uuid.uuid4().hex[:8]}"
    yield path
    if path.exists():
        for p in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        path.rmdir()


def test_bcc_compiles_and_loads_the_datapath_programs(
        container: Container, pin_dir: Path) -> None:
    """As the DaemonSet runs it: privileged, the host's /lib/modules and /usr/src
    read-only, and the host's bpffs for the pinned maps."""
    if not Path("/sys/fs/bpf").is_mount():
        pytest.fail("no bpffs at /sys/fs/bpf (scripts/setup.sh mounts it)")
    # buildah's chroot keeps /sys read-only: the host's bpffs goes to /mnt/bpf.
    inside = Path("/mnt/bpf") / pin_dir.name
    load = f"""
from datapath.loader import AntispoofProgram, FeaturePrograms
anti = AntispoofProgram({str(inside / 'antispoof')!r})
anti.load()
features = FeaturePrograms(pin_dir={str(inside / 'features')!r})
features.load()
print("loaded", anti.fd > 0, sorted(features.fds))
features.close(unpin=True)
"""
    # The capabilities bcc and tc need of a privileged container (not ALL: this
    # machine's own bounding set lacks CAP_SYS_RESOURCE, which nothing here needs).
    caps = ["CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_IPC_LOCK"]
    out = container.ok("python3", "-c", load, caps=caps, timeout=600, volumes=[
        "/lib/modules:/lib/modules:ro", "/usr/src:/usr/src:ro", "/sys/fs/bpf:/mnt/bpf"])
    # The maps were pinned on the host's bpffs, where the agent keeps them.
    assert (pin_dir / "antispoof").is_dir()
    assert "loaded True" in out


def test_the_image_carries_no_build_tools_or_caches(container: Container, image: Image) -> None:
    for tool in ("gcc", "cc", "clang", "make", "apt", "apt-get", "pip", "pip3"):
        assert container.run("sh", "-c", f"command -v {tool}").returncode != 0, tool
    container.ok("sh", "-ec", "test ! -e /var/lib/apt/lists; test ! -e /var/cache/apt; "
                 "test ! -e /root/.cache; test ! -e /usr/share/man/man1")
    # bcc is Debian's python3-bpfcc, not the unrelated PyPI package of that name.
    container.ok("python3", "-c", "import bcc, os, sys; sys.exit('/usr/lib/python3/dist-"
                 "packages/bcc/' not in os.path.realpath(bcc.__file__))")


def test_the_archive_names_the_image_for_skopeo_and_containerd(image: Image) -> None:
    assert image.archive.name == f"stickyip-{VERSION}.oci.tar"
    index = json.loads(subprocess.run(["tar", "-xOf", str(image.archive), "index.json"],
                                      capture_output=True, check=True).stdout)
    (manifest,) = index["manifests"]
    assert manifest["annotations"]["org.opencontainers.image.ref.name"] == image.ref
    assert manifest["annotations"]["io.containerd.image.name"] == image.ref
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{image.archive}"],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["Labels"]["org.opencontainers.image.version"] == VERSION
    assert info["Digest"] == manifest["digest"]


def test_containerd_imports_the_archive_under_its_name(image: Image, tmp_path: Path) -> None:
    """What ``kind load image-archive`` and ``ctr -n k8s.io images import`` do, on a
    private containerd (own root, state and socket) started for this test."""
    sock = tmp_path / "containerd.sock"
    (tmp_path / "config.toml").write_text(
        f'version = 2\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
        f'[grpc]\n  address = "{sock}"\n')
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.Popen(["containerd", "--config", str(tmp_path / "config.toml")],
                                stdout=log, stderr=log)
    try:
        ctr = ["ctr", "--address", str(sock), "--namespace", "k8s.io"]
        # ctr waits for the socket to answer (its own dial timeout) before importing.
        done = subprocess.run([*ctr, "--timeout", "30s", "images", "import", "--all-platforms",
                               str(image.archive)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr + (tmp_path / "log").read_text()[-2000:]
        names = subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True,
                               check=True).stdout.split()
        assert image.ref in names
    finally:
        proc.terminate()
        proc.wait(timeout=30)
