"""The decision modules stay pure: they import no I/O library (DESIGN.md §1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import webhooks

PURE = ("review.py", "mutation.py", "validation.py", "errors.py")
IO = {"aiohttp", "redis", "kubernetes", "kubernetes_asyncio", "bcc", "pyroute2", "socket",
      "ssl", "asyncio", "subprocess", "webhooks.server", "webhooks.tls", "ipam.redis_store",
      "ipam.connection"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module: str) -> None:
    path = Path(webhooks.__file__).parent / module
    bad = {n for n in imported(path) if n in IO or n.split(".")[0] in IO}
    assert not bad, f"{module} imports {sorted(bad)}"
