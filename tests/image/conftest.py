"""The image ``make image`` builds (reused when its inputs did not change), and one
working container of it in which the image tests run commands with ``buildah run``.

Building needs root (mmdebstrap, buildah): elsewhere these tests skip with that
reason, like tests/privileged. As root, an image that cannot be built FAILS them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "image" / "build.py"
DRIVER = os.environ.get("STICKYIP_IMAGE_STORAGE_DRIVER", "vfs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    for item in items:
        if "/tests/image/" in str(item.fspath):
            item.add_marker(pytest.mark.skip(
                reason="builds and runs the image as root (mmdebstrap, buildah); "
                       "run 'make test' as root"))


def buildah(*args: str, check: bool = True, timeout: float = 300,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["buildah", "--storage-driver", DRIVER, *args], capture_output=True,
                          text=True, timeout=timeout, input=stdin)
    if check and done.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args[:4])} ... failed: {done.stderr.strip()}")
    return done


@dataclass(frozen=True)
class Image:
    ref: str
    archive: Path
    summary: dict[str, Any]


@dataclass(frozen=True)
class Container:
    """A working container of the image; every ``run`` starts a fresh process in it."""

    name: str

    def run(self, *cmd: str, user: str | int = "0:0", volumes: Sequence[str] = (),
            env: Mapping[str, str] | None = None, caps: Sequence[str] = (),
            stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        args = ["run", "--isolation", "chroot", "--user", str(user)]
        for v in volumes:
            args += ["-v", v]
        for k, val in (env or {}).items():
            args += ["-e", f"{k}={val}"]
        for cap in caps:
            args += ["--cap-add", cap]
        return buildah(*args, self.name, "--", *cmd, check=False, timeout=timeout, stdin=stdin)

    def ok(self, *cmd: str, **kw: Any) -> str:
        done = self.run(*cmd, **kw)
        assert done.returncode == 0, (f"{' '.join(cmd)} exited {done.returncode} in the "
                                      f"image:\n{done.stdout}\n{done.stderr}")
        return done.stdout + done.stderr


@pytest.fixture(scope="session")
def image() -> Image:
    done = subprocess.run([sys.executable, str(BUILD)], capture_output=True, text=True,
                          timeout=3600, cwd=ROOT)
    if done.returncode != 0:
        pytest.fail(f"make image failed (exit {done.returncode}):\n{done.stderr[-6000:]}",
                    pytrace=False)
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return Image(ref=str(summary["image"]), archive=Path(str(summary["archive"])),
                 summary=summary)


@pytest.fixture(scope="session")
def container(image: Image) -> Iterator[Container]:
    name = buildah("from", "--pull-never", image.ref).stdout.strip()
    try:
        yield Container(name)
    finally:
        buildah("rm", name, check=False)
