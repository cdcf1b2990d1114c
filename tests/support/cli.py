"""The real ``stickyip`` command in a subprocess, as an operator runs it: an environment
holding only the settings a test gives, and the checks of what it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stickyip_env(home: Path | None = None, **settings: str) -> dict[str, str]:
    """This process's environment without ``STICKYIP_*`` variables and ``KUBECONFIG``,
    plus ``settings``; with ``home``, ``HOME`` moves there (no ``~/.kube/config``, no
    embedded store of the machine's user)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STICKYIP_") and k != "KUBECONFIG"}
    if home is not None:
        env["HOME"] = str(home)
    return env | settings


def stickyip(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
             cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``stickyip ARGS...`` to its end (``env`` defaults to :func:`stickyip_env`)."""
    return subprocess.run([sys.executable, "-m", "stickyip.cli", *args], cwd=cwd,
                          env=stickyip_env() if env is None else env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def start_stickyip(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start a long-running ``stickyip ARGS...`` (a server), its output piped."""
    return subprocess.Popen([sys.executable, "-m", "stickyip.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line a failed command printed last, with no traceback."""
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip().endswith(errors[0]), "the error is the last word"
    return errors[0]
