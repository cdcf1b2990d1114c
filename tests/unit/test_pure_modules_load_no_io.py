"""Importing a pure decision module loads no I/O library, at run time too.

import-linter (``make test`` runs ``lint-imports``) checks the import graph;
this imports each module named by the ``pure-modules`` contract in a fresh
interpreter and looks at what actually got loaded, which also catches a lazy
package ``__init__`` that stopped being lazy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def contract(contract_id: str) -> dict[str, list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for c in config["tool"]["importlinter"]["contracts"]:
        if c["id"] == contract_id:
            return c  # type: ignore[no-any-return]
    raise AssertionError(f"no import-linter contract {contract_id!r} in pyproject.toml")


PURE = contract("pure-modules")
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))
"""


def test_the_contract_names_modules() -> None:
    assert len(PURE["source_modules"]) >= 20
    assert {"redis", "aiohttp", "kubernetes", "pyroute2", "bcc"} <= set(
        PURE["forbidden_modules"])


@pytest.mark.parametrize("module", PURE["source_modules"])
def test_pure_module_loads_no_io_library(module: str) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, module], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    loaded = set(json.loads(out))
    assert not loaded & set(PURE["forbidden_modules"]), (
        f"importing {module} loads {sorted(loaded & set(PURE['forbidden_modules']))}")
