"""What ships is what is measured: the image's pinned run-time dependencies
(scripts/image/requirements.lock) are the versions installed in the venv the
suite and the benchmarks run in."""

from __future__ import annotations

import subprocess
import sys

from tests.unit.manifests.conftest import ROOT


def test_the_image_lock_pins_the_venvs_versions() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts/image/lock.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
