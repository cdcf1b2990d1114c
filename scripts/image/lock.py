"""Writes ``scripts/image/requirements.lock``: the project's runtime dependencies,
pinned to the versions installed in the project venv (the ones the tests and the
benchmarks run against) with the SHA-256 of the wheel the image installs for each.

    .venv/bin/python scripts/image/lock.py            # rewrite the lock
    .venv/bin/python scripts/image/lock.py --check    # exit 1 if it is out of date

The image (Debian bookworm's Python 3.11, x86_64) installs exactly these files
with ``pip install --require-hashes``; ``scripts/setup.sh`` installs the same pins
into the venv, so what ships is what is measured. Standard library only, plus
``packaging`` (in the project venv through its dev tools).
"""

from __future__ import annotations

import argparse
import email
import hashlib
import importlib.metadata as md
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
LOCK = HERE / "requirements.lock"
INSTALLER_LOCK = HERE / "installer.lock"
PROJECT = "stickyip"
#: Debian bookworm: CPython 3.11, glibc 2.36, x86_64.
PYTHON_VERSION = "3.11"
ABI = "cp311"
GLIBC_MINOR = 36
#: pip runs from its wheel during the build and is not left in the image.
INSTALLER = ("pip",)


def platforms() -> list[str]:
    tags = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"]
    tags += [f"manylinux_2_{minor}_x86_64" for minor in range(5, GLIBC_MINOR + 1)]
    return [*tags, "linux_x86_64"]


def download_args() -> list[str]:
    """pip options that select the image's wheels whatever the host is."""
    args = ["--only-binary=:all:", "--no-deps", "--python-version", PYTHON_VERSION,
            "--implementation", "cp", "--abi", ABI, "--abi", "abi3", "--abi", "none"]
    for tag in platforms():
        args += ["--platform", tag]
    return args


#: The interpreter of the image (Debian bookworm's python3), for dependency markers:
#: e.g. redis needs async-timeout below Python 3.11.3, which the venv may not.
TARGET_ENV = {
    "implementation_name": "cpython", "implementation_version": "3.11.2",
    "os_name": "posix", "platform_machine": "x86_64",
    "platform_python_implementation": "CPython", "platform_release": "",
    "platform_system": "Linux", "platform_version": "", "python_full_version": "3.11.2",
    "python_version": "3.11", "sys_platform": "linux",
}


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _installed(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _wanted(raw: str, extras: frozenset[str]) -> Requirement | None:
    req = Requirement(raw)
    if req.marker is None or any(req.marker.evaluate({**TARGET_ENV, "extra": e})
                                 for e in ("", *extras)):
        return req
    return None


class Resolution:
    """The run-time closure of the project for the image's interpreter: each
    distribution at the version installed in this venv (the measured one), or, for
    the few the venv's newer Python does not need, the newest that fits."""

    def __init__(self, workdir: Path | None) -> None:
        self.workdir = workdir
        #: name -> (version, wheel file or None, in the venv?)
        self.pins: dict[str, tuple[str, Path | None, bool]] = {}

    def walk(self, req: Requirement) -> None:
        key = _key(req.name)
        if key in self.pins and not req.extras:
            return
        have = _installed(req.name)
        in_venv = have is not None and req.specifier.contains(have, prereleases=True)
        requires: list[str]
        if self.workdir is None:  # --check: metadata of the venv only
            if not in_venv:
                self.pins[key] = (read_pins(LOCK).get(key, "missing"), None, False)
                return
            assert have is not None
            self.pins[key] = (have, None, True)
            requires = md.distribution(req.name).requires or []
        else:
            wheel = self._download(f"{req.name}=={have}" if in_venv else
                                   f"{req.name}{req.specifier}", key)
            version = wheel.name.split("-")[1]
            self.pins[key] = (version, wheel, in_venv)
            requires = _wheel_requires(wheel)
        for raw in requires:
            sub = _wanted(raw, frozenset(req.extras))
            if sub is not None:
                self.walk(sub)

    def _download(self, spec: str, key: str) -> Path:
        assert self.workdir is not None
        dest = self.workdir / key
        shutil.rmtree(dest, ignore_errors=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q",
                               "--disable-pip-version-check", "-d", str(dest), *download_args(),
                               spec], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"lock: pip download {spec} failed:\n{done.stderr.strip()}")
        (wheel,) = dest.iterdir()
        return wheel


def _wheel_requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.message_from_bytes(z.read(meta))
    return list(msg.get_all("Requires-Dist") or [])


def runtime_closure(workdir: Path | None) -> dict[str, tuple[str, Path | None, bool]]:
    res = Resolution(workdir)
    for raw in md.distribution(PROJECT).requires or []:
        req = _wanted(raw, frozenset())
        if req is not None:
            res.walk(req)
    return dict(sorted(res.pins.items()))


def render(pins: dict[str, tuple[str, Path | None, bool]], *, what: str) -> str:
    lines = [f"# {what}",
             "# Generated by scripts/image/lock.py from the project venv; do not edit.",
             f"# Target: CPython {TARGET_ENV['python_full_version']} ({ABI}), "
             f"glibc 2.{GLIBC_MINOR}, x86_64.", ""]
    for name, (version, wheel, in_venv) in pins.items():
        assert wheel is not None
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        note = "" if in_venv else " (not in the venv: the image's Python needs it)"
        lines += [f"{name}=={version} \\", f"    --hash=sha256:{digest}  # {wheel.name}{note}"]
    return "\n".join(lines) + "\n"


def read_pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "--")) and "==" in line:
            name, _, rest = line.partition("==")
            pins[_key(name)] = rest.split()[0].rstrip("\\").strip()
    return pins


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="only compare the lock's versions with this venv's (no download)")
    args = p.parse_args(argv)
    if args.check:
        want = {n: v for n, (v, _, _) in runtime_closure(None).items()}
        have = read_pins(LOCK)
        wrong = [f"{n}: needs {v}, the lock has {have.get(n, 'nothing')}"
                 for n, v in want.items() if have.get(n) != v]
        wrong += [f"{n}: in the lock, not needed" for n in sorted(set(have) - set(want))]
        if wrong:
            print("scripts/image/requirements.lock does not match the venv:\n  "
                  + "\n  ".join(wrong) + "\nrun: make image-lock", file=sys.stderr)
            return 1
        return 0
    with tempfile.TemporaryDirectory(prefix="stickyip-lock-") as tmp:
        pins = runtime_closure(Path(tmp))
        LOCK.write_text(render(pins, what="Run-time dependencies of stickyip installed in "
                               "the image."))
        tools = Resolution(Path(tmp) / "tools")
        for name in INSTALLER:
            tools.walk(Requirement(f"{name}=={md.version(name)}"))
        INSTALLER_LOCK.write_text(render(tools.pins, what="The installer the image build "
                                         "runs (not shipped)."))
    print(f"wrote {LOCK} ({len(pins)} pins) and {INSTALLER_LOCK.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
