"""The agent's init container script, run here against a scratch directory
standing in for the node's /opt/cni/bin and /etc/cni/net.d, installs a
``stickyip-cni`` the runtime can execute and the rendered conflist."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.manifests.conftest import agent_cni_install, rendered


def _script_and_conflist() -> tuple[str, str]:
    _, init, conflist = agent_cni_install(rendered("default"))
    return init["args"][0], conflist


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
def test_init_script_installs_an_executable_plugin_and_the_conflist(tmp_path: Path) -> None:
    script, conflist = _script_and_conflist()
    host = tmp_path / "host"
    (host / "opt/cni/bin").mkdir(parents=True)
    (host / "etc/cni/net.d").mkdir(parents=True)
    cni_config = tmp_path / "cni-config"
    cni_config.mkdir()
    (cni_config / "10-stickyip.conflist").write_text(conflist)
    local = (script.replace("/host/", f"{host}/")
             .replace("/etc/stickyip/cni/", f"{cni_config}/")
             # no self-contained build in this checkout: take the script path
             .replace("/opt/stickyip/bin/stickyip-cni", f"{tmp_path}/no-such-build"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(["sh", "-c", local], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    plugin = host / "opt/cni/bin/stickyip-cni"
    assert os.access(plugin, os.X_OK)
    assert sorted(p.name for p in (host / "opt/cni/bin").iterdir()) == ["stickyip-cni"]
    assert (host / "etc/cni/net.d/10-stickyip.conflist").read_text() == conflist

    # The runtime executes it directly (shebang), with only the CNI environment.
    conf = json.loads(conflist)
    plugin_conf = {"cniVersion": conf["cniVersion"], "name": conf["name"],
                   **conf["plugins"][0]}
    run = subprocess.run([str(plugin)], input=json.dumps(plugin_conf), capture_output=True,
                         text=True, timeout=60,
                         env={"CNI_COMMAND": "VERSION", "PATH": env["PATH"]})
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert conf["cniVersion"] in answer["supportedVersions"]
