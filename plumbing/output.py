"""Rendering of listings: readable tables for people, JSON (``-o json``) for machines."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *,
          out: TextIO | None = None, empty: str = "(none)") -> None:
    stream = out or sys.stdout
    if not rows:
        print(empty, file=stream)
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
          file=stream)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(),
              file=stream)


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, *,
         out: TextIO | None = None, empty: str = "(none)") -> None:
    if fmt == "json":
        print(json.dumps(list(rows), indent=2, default=str), file=out or sys.stdout)
    else:
        table(rows, columns, out=out, empty=empty)


def _cell(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".")
    if isinstance(v, dict):
        return ",".join(f"{k}={val}" for k, val in v.items()) or "-"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    return str(v)
