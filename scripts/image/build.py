"""Builds the stickyip OCI image from Debian packages and the project's wheel, with
no container registry: ``make image`` runs this as root.

1. base layer: ``mmdebstrap`` installs Debian bookworm's Essential set plus the
   packages in ``scripts/image/debian.txt`` (no apt, no docs, no caches);
2. app layer: a venv at ``/opt/stickyip`` (Debian's python3) with the wheels of
   ``scripts/image/requirements.lock`` (pinned, SHA-256 checked) and the project's
   own wheel, bcc linked in from Debian's python3-bpfcc;
3. the image ``localhost/stickyip:VERSION`` in local containers-storage (buildah)
   and ``build/stickyip-VERSION.oci.tar``, an OCI archive for ``kind load
   image-archive``, ``ctr -n k8s.io images import`` or ``skopeo copy``.

Each step is reused when its inputs did not change: the base image is tagged with
a hash of the package list and the Debian sources, downloaded wheels are kept by
hash, and an image whose ``io.stickyip.build-key`` label matches the hash of every
input (base, locks, the wheel's content) is not rebuilt. The last line on stdout is
a JSON summary; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NAME = "localhost/stickyip"
BASE_NAME = "localhost/stickyip-base"
SUITE = "bookworm"
PACKAGES = HERE / "debian.txt"
LOCK = HERE / "requirements.lock"
INSTALLER_LOCK = HERE / "installer.lock"
VENV = "/opt/stickyip"
NONROOT = 65532
#: Paths dpkg never unpacks into the base layer.
DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*",
                 "/usr/share/locale/*", "/usr/share/lintian/*", "/usr/share/bash-completion/*")
DPKG_INCLUDES = ("/usr/share/doc/*/copyright",)
#: Installed but never imported by the product, left out of the image: the
#: kubernetes client's asyncio copy is a third of the app layer (68 MB). The build
#: refuses to prune a module the product imports.
PRUNE = {"kubernetes/aio": ("kubernetes.aio", "kubernetes import aio")}
#: Bump when the way the base is made changes (invalidates cached bases).
BASE_RECIPE = "2"
LABEL_KEY = "io.stickyip.build-key"


class BuildError(Exception):
    """A step failed; the message says which and what to do."""


def log(msg: str) -> None:
    print(f"image: {msg}", file=sys.stderr, flush=True)


def storage_driver() -> str:
    return os.environ.get("STICKYIP_IMAGE_STORAGE_DRIVER", "vfs")


def buildah(*args: str, capture: bool = True, check: bool = True) -> str:
    cmd = ["buildah", "--storage-driver", storage_driver(), *args]
    done = subprocess.run(cmd, capture_output=capture, text=True)
    if check and done.returncode != 0:
        err = ((done.stdout or "") + (done.stderr or "")).strip()[-3000:] if capture else ""
        shown = " ".join(cmd[3:]) if len(" ".join(cmd[3:])) < 300 else " ".join(cmd[3:8]) + " ..."
        raise BuildError(f"buildah {shown} failed (exit {done.returncode}):\n{err}")
    return (done.stdout or "").strip() if capture else ""


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def wheel_sources() -> tuple[str, ...]:
    """What goes into the project's wheel: pyproject's package directories (its
    ``packages.find`` patterns), pyproject itself and the README (the metadata)."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]
    tops = sorted({pat.rstrip("*").rstrip(".") for pat in find.get("include", [])})
    return ("pyproject.toml", "README.md", *(t for t in tops if (ROOT / t).is_dir()))


def default_cache() -> Path:
    env = os.environ.get("STICKYIP_IMAGE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "stickyip" / "image"


def sha256(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        data = p.encode() if isinstance(p, str) else p
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def packages() -> list[str]:
    out = []
    for line in PACKAGES.read_text().splitlines():
        word = line.split("#", 1)[0].strip()
        if word:
            out.append(word)
    return out


def debian_sources() -> tuple[list[str], str]:
    """mmdebstrap's MIRROR arguments and their content (for the cache key): the
    host's own Debian sources when the host runs the same suite (they carry the
    security and updates suites), else $STICKYIP_IMAGE_MIRROR or mmdebstrap's
    default mirror."""
    mirror = os.environ.get("STICKYIP_IMAGE_MIRROR", "")
    if mirror:
        return [mirror], mirror
    host = Path("/etc/apt/sources.list.d/debian.sources")
    codename = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                codename = line.split("=", 1)[1].strip('"')
    if codename == SUITE and host.is_file():
        return [str(host)], host.read_text()
    return [], "mmdebstrap-default"


def inspect(ref: str) -> dict[str, Any] | None:
    """buildah's description of the image ``ref``, or None when storage has none."""
    done = subprocess.run(["buildah", "--storage-driver", storage_driver(), "inspect",
                           "--type", "image", ref], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    info: dict[str, Any] = json.loads(done.stdout)
    return info


def image_labels(ref: str) -> dict[str, str] | None:
    info = inspect(ref)
    if info is None:
        return None
    return dict(info["OCIv1"]["config"].get("Labels") or {})


def image_id(ref: str) -> str:
    info = inspect(ref)
    if info is None:
        raise BuildError(f"no image {ref} in local storage")
    return str(info["FromImageID"])


@contextlib.contextmanager
def container(image: str) -> Iterator[str]:
    ctr = buildah("from", "--pull-never", image)
    try:
        yield ctr
    finally:
        buildah("rm", ctr, check=False)


def run_in(ctr: str, *cmd: str, volumes: Sequence[str] = ()) -> None:
    args = ["run", "--isolation", "chroot", "--user", "0:0"]
    for v in volumes:
        args += ["-v", v]
    buildah(*args, ctr, "--", *cmd)


# -- step 1: the Debian base ---------------------------------------------------------

def base_image(timings: dict[str, float]) -> str:
    mirrors, sources = debian_sources()
    key = sha256(BASE_RECIPE, SUITE, PACKAGES.read_text(), sources, repr(DPKG_EXCLUDES),
                 repr(DPKG_INCLUDES))[:16]
    ref = f"{BASE_NAME}:{key}"
    if image_labels(ref) is not None:
        log(f"base {ref} (reused)")
        return ref
    started = time.monotonic()
    log(f"base {ref}: mmdebstrap {SUITE} + {', '.join(packages())}")
    with tempfile.TemporaryDirectory(prefix="stickyip-rootfs-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        cmd = ["mmdebstrap", "--variant=essential", "--mode=root", "--format=tar",
               "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
               f"--include={','.join(packages())}"]
        cmd += [f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES]
        cmd += [f"--dpkgopt=path-include={p}" for p in DPKG_INCLUDES]
        # The non-root user the webhook and scheduler run as (runAsUser 65532).
        cmd += ["--customize-hook=chroot \"$1\" groupadd --gid 65532 nonroot",
                "--customize-hook=chroot \"$1\" useradd --uid 65532 --gid 65532 "
                "--no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot",
]
        cmd += [SUITE, str(tar), *mirrors]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"mmdebstrap failed (exit {done.returncode}):\n"
                             f"{done.stderr.strip()[-3000:]}")
        ctr = buildah("from", "scratch")
        try:
            buildah("add", ctr, str(tar), "/")
            # No apt in the image: drop what mmdebstrap leaves of its configuration.
            run_in(ctr, "rm", "-rf", "/etc/apt", "/var/lib/apt", "/var/cache/apt",
                   "/var/log/apt", "/var/cache/ldconfig/aux-cache", "/var/log/dpkg.log",
                   "/var/log/alternatives.log")
            run_in(ctr, "sh", "-c", "rm -f /var/cache/debconf/*-old")
            buildah("config", "--created-by", f"mmdebstrap {SUITE} ({PACKAGES.name})", ctr)
            buildah("commit", "--quiet", "--format", "oci", ctr, ref)
        finally:
            buildah("rm", ctr, check=False)
    for line in buildah("images", "--format", "{{.Name}}:{{.Tag}}", BASE_NAME,
                        check=False).splitlines():
        if line and line != ref:
            buildah("rmi", line, check=False)
    timings["base"] = round(time.monotonic() - started, 1)
    return ref


# -- step 2: wheels ------------------------------------------------------------------

def lock_entries(path: Path) -> list[tuple[str, str]]:
    """(wheel file name, sha256) of each pin, from the lock's comments."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("--hash=sha256:") and "#" in line:
            digest = line.split()[0].removeprefix("--hash=sha256:")
            out.append((line.split("#", 1)[1].split()[0], digest))
    return out


def fetch_wheels(cache: Path, timings: dict[str, float]) -> Path:
    """The locked wheels in a directory named by their hashes (downloaded once)."""
    entries = lock_entries(LOCK) + lock_entries(INSTALLER_LOCK)
    dest = cache / "wheels" / sha256(*(f"{n}={d}" for n, d in entries))[:16]
    marker = dest / ".complete"
    if marker.exists():
        return dest
    started = time.monotonic()
    sys.path.insert(0, str(HERE))
    from lock import download_args

    dest.mkdir(parents=True, exist_ok=True)
    for lock in (LOCK, INSTALLER_LOCK):
        log(f"downloading the wheels of {lock.name}")
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q",
                               "--disable-pip-version-check", "--require-hashes",
                               "-d", str(dest), *download_args(), "-r", str(lock)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"pip download -r {lock.name} failed: {done.stderr.strip()[-2000:]}")
    for name, digest in entries:
        f = dest / name
        if not f.is_file() or hashlib.sha256(f.read_bytes()).hexdigest() != digest:
            raise BuildError(f"{name}: not downloaded or its hash differs from the lock; "
                             "regenerate it with 'make image-lock'")
    marker.touch()
    timings["wheels"] = round(time.monotonic() - started, 1)
    return dest


def project_wheel(out: Path, timings: dict[str, float]) -> tuple[Path, str]:
    """Builds the project's wheel from a clean copy of its sources (setuptools'
    in-tree build/ would keep modules deleted since); returns it and a hash of its
    content (names and bytes, not zip timestamps)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stickyip-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for rel in wheel_sources():
            p = ROOT / rel
            if p.is_dir():
                shutil.copytree(p, src / rel,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(p, src / rel)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                               "--disable-pip-version-check", "-w", str(out), str(src)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"building the project wheel failed: {done.stderr.strip()[-2000:]}")
    (wheel,) = out.glob("stickyip-*.whl")
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as z:
        for info in sorted(z.infolist(), key=lambda i: i.filename):
            h.update(info.filename.encode() + b"\0" + z.read(info) + b"\0")
    timings["wheel"] = round(time.monotonic() - started, 1)
    return wheel, h.hexdigest()


# -- step 3: the image ---------------------------------------------------------------

def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def app_image(ref: str, base: str, wheels: Path, wheel: Path, key: str,
              timings: dict[str, float]) -> None:
    started = time.monotonic()
    installer = next(wheels.glob("pip-*.whl"))
    pip = [f"{VENV}/bin/python", f"/wheels/{installer.name}/pip", "install", "--no-index",
           "--no-cache-dir", "--disable-pip-version-check", "--no-warn-script-location",
           "--find-links", "/wheels"]
    revision = git("rev-parse", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", *wheel_sources(), "scripts/image"):
        revision += "-dirty"
    created = int(git("log", "-1", "--format=%ct") or time.time())
    with container(base) as ctr:
        vols = [f"{wheels}:/wheels:ro", f"{HERE}:/lock:ro", f"{wheel.parent}:/dist:ro"]
        log("installing the locked wheels and the project into " + VENV)
        run_in(ctr, "python3", "-m", "venv", "--without-pip", VENV, volumes=vols)
        run_in(ctr, *pip, "--require-hashes", "--no-deps", "-r", f"/lock/{LOCK.name}",
               volumes=vols)
        run_in(ctr, *pip, "--no-deps", f"/dist/{wheel.name}", volumes=vols)
        run_in(ctr, f"{VENV}/bin/python", f"/wheels/{installer.name}/pip", "check",
               "--disable-pip-version-check", volumes=vols)
        for rel in PRUNE:
            run_in(ctr, "sh", "-ec", f'rm -r "$({VENV}/bin/python -c "import sysconfig; '
                   f'print(sysconfig.get_paths()[\'purelib\'])")/{rel}"')
        # bcc is Debian's python3-bpfcc (the PyPI package "bcc" is unrelated): expose
        # only that module to the venv, as scripts/setup.sh does for the dev venv.
        run_in(ctr, "sh", "-ec",
               f'site=$({VENV}/bin/python -c "import sysconfig; '
               f'print(sysconfig.get_paths()[\'purelib\'])"); '
               f'ln -s /usr/lib/python3/dist-packages/bcc "$site/bcc"; '
               f'{VENV}/bin/python -c "import bcc, datapath.cni, stickyip.cli"')
        labels = {
            "org.opencontainers.image.title": "stickyip",
            "org.opencontainers.image.description":
                "stickyip webhook, scheduler, node agent, CNI plugin, BIRD 2 and Redis",
            "org.opencontainers.image.version": version(),
            "org.opencontainers.image.revision": revision,
            "org.opencontainers.image.licenses": "Apache-2.0",
            "org.opencontainers.image.base.name": f"debian:{SUITE} (mmdebstrap)",
            LABEL_KEY: key,
        }
        config = ["config", "--user", f"{NONROOT}:{NONROOT}", "--workingdir", "/",
                  "--env", f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                  "/usr/bin:/sbin:/bin",
                  "--env", "LANG=C.UTF-8", "--env", "PYTHONDONTWRITEBYTECODE=1",
                  "--env", "PYTHONUNBUFFERED=1",
                  "--cmd", '["stickyip", "--help"]', "--entrypoint", "[]",
                  "--created-by", f"stickyip {version()} wheel + {LOCK.name}"]
        for k, v in labels.items():
            config += ["--label", f"{k}={v}"]
        buildah(*config, ctr)
        old = image_id(ref) if image_labels(ref) is not None else ""
        buildah("commit", "--quiet", "--format", "oci", "--timestamp", str(created), ctr, ref)
        if old and old != image_id(ref):
            buildah("rmi", old, check=False)
    timings["image"] = round(time.monotonic() - started, 1)


def write_archive(ref: str, archive: Path, key: str, timings: dict[str, float]) -> bool:
    stamp = archive.with_name(archive.name + ".build-key")
    if archive.is_file() and stamp.is_file() and stamp.read_text().strip() == key:
        return False
    started = time.monotonic()
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(f".{archive.name}.tmp")
    tmp.unlink(missing_ok=True)
    log(f"writing {archive}")
    # The reference inside the archive is the full name, so importers (containerd,
    # kind, skopeo) register the image under the name the manifests use.
    buildah("push", "--quiet", "--format", "oci", ref, f"oci-archive:{tmp}:{ref}")
    name_for_containerd(tmp, ref)
    os.replace(tmp, archive)
    stamp.write_text(key + "\n")
    timings["archive"] = round(time.monotonic() - started, 1)
    return True


def check_prune() -> None:
    for rel, needles in PRUNE.items():
        for pkg in wheel_sources():
            for py in (ROOT / pkg).rglob("*.py") if (ROOT / pkg).is_dir() else ():
                text = py.read_text(errors="replace")
                if any(n in text for n in needles):
                    raise BuildError(f"{py.relative_to(ROOT)} uses {rel.replace('/', '.')}, "
                                     "which the image leaves out: drop it from PRUNE in "
                                     "scripts/image/build.py")


def name_for_containerd(archive: Path, ref: str) -> None:
    """Adds ``io.containerd.image.name`` to the archive's index: containerd (``ctr
    images import``, ``kind load image-archive``) reads only the tag from the OCI
    ``ref.name`` and would otherwise register the image under a made-up name.
    index.json is not content-addressed, so rewriting it keeps every digest."""
    with tarfile.open(archive) as src:
        members = src.getmembers()
        index = json.loads(src.extractfile("index.json").read())  # type: ignore[union-attr]
        for m in index["manifests"]:
            m.setdefault("annotations", {})["io.containerd.image.name"] = ref
        data = json.dumps(index, separators=(",", ":")).encode()
        out = archive.with_name(archive.name + ".named")
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
            for m in members:
                if m.name == "index.json":
                    m.size = len(data)
                    dst.addfile(m, io.BytesIO(data))
                else:
                    dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    os.replace(out, archive)


def preflight() -> None:
    check_prune()
    if os.geteuid() != 0:
        raise BuildError("the image is built as root (mmdebstrap, buildah): run 'make image' "
                         "as root")
    missing = [t for t in ("mmdebstrap", "buildah") if shutil.which(t) is None]
    if missing:
        raise BuildError(f"{', '.join(missing)} not installed: run 'bash scripts/setup.sh' "
                         "(or 'make image', which does)")


def build(*, archive_dir: Path, cache: Path, archive: bool = True) -> dict[str, object]:
    preflight()
    timings: dict[str, float] = {}
    started = time.monotonic()
    ref = f"{NAME}:{version()}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        base = base_image(timings)
        wheels = fetch_wheels(cache, timings)
        with tempfile.TemporaryDirectory(prefix="stickyip-dist-") as dist:
            wheel, content = project_wheel(Path(dist), timings)
            key = sha256(base, LOCK.read_text(), INSTALLER_LOCK.read_text(), content,
                         (HERE / "build.py").read_text())[:32]
            labels = image_labels(ref)
            reused = labels is not None and labels.get(LABEL_KEY) == key
            if reused:
                log(f"{ref} is up to date (build key {key[:12]})")
            else:
                app_image(ref, base, wheels, wheel, key, timings)
        out = archive_dir / f"stickyip-{version()}.oci.tar"
        wrote = write_archive(ref, out, key, timings) if archive else False
        size = buildah("images", "--format", "{{.Size}}", ref).splitlines()[0]
    timings["total"] = round(time.monotonic() - started, 1)
    summary: dict[str, object] = {
        "image": ref, "id": image_id(ref), "size": size, "key": key, "reused": reused,
        "archive": str(out) if archive else None, "archive_written": wrote,
        "storage_driver": storage_driver(), "seconds": timings}
    log(f"{ref} ({size}) " + (f"-> {out} " if archive else "") + f"in {timings['total']} s")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build the stickyip OCI image (as root).")
    p.add_argument("--archive-dir", default=str(ROOT / "build"),
                   help="where the OCI archive goes (default: build/)")
    p.add_argument("--no-archive", action="store_true", help="only the image in local storage")
    p.add_argument("--cache", default=None,
                   help="cache of wheels and build locks (default: ~/.cache/stickyip/image)")
    p.add_argument("--print-ref", action="store_true",
                   help="print the image reference this checkout builds and exit")
    args = p.parse_args(argv)
    if args.print_ref:
        print(f"{NAME}:{version()}")
        return 0
    try:
        summary = build(archive_dir=Path(args.archive_dir), archive=not args.no_archive,
                        cache=Path(args.cache) if args.cache else default_cache())
    except BuildError as e:
        print(f"image: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
