"""``logging`` raises KeyError at run time when ``extra`` reuses a LogRecord attribute
(``name``, ``msg``, ``module``...); such a call crashes a component only at the log
level that emits it. Check every ``extra={...}`` literal in the packages."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["ipam", "plumbing", "scheduler", "webhooks", "datapath", "stickyip", "kubestandin",
            "demo"]
RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def test_no_extra_key_overwrites_a_log_record_attribute() -> None:
    bad = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                for kw in node.keywords:
                    if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                        for key in kw.value.keys:
                            if isinstance(key, ast.Constant) and key.value in RESERVED:
                                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} "
                                           f"extra key {key.value!r}")
    assert bad == []
