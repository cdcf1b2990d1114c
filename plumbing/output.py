"""Listings in kubectl's output formats: ``table`` and ``wide`` for people, ``json`` and
``yaml`` for machines (numbers stay numbers), ``name`` for scripts (one name a line);
and the human forms of durations and times that tables show."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

FORMATS = ("table", "wide", "json", "yaml", "name")


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: the row ``key`` it shows (or a value ``of`` the whole row), how
    (``show``), and whether only ``-o wide`` shows it."""

    key: str
    title: str = ""
    show: Callable[[Any], str] | None = None
    wide: bool = False
    of: Callable[[dict[str, Any]], Any] | None = None

    def text(self, row: dict[str, Any]) -> str:
        value = self.of(row) if self.of is not None else row.get(self.key)
        return (self.show or cell)(value)

    @property
    def heading(self) -> str:
        return (self.title or self.key).upper()


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[Column], fmt: str, *,
         name: Callable[[dict[str, Any]], str] | None = None, out: TextIO | None = None,
         empty: str = "(none)") -> None:
    """Print ``rows`` (typed values: numbers, strings, lists, None) as ``fmt``. Tables say
    ``empty`` when there is nothing; the machine formats print an empty list."""
    stream = out or sys.stdout
    if fmt == "json":
        print(json.dumps(list(rows), indent=2, default=str), file=stream)
    elif fmt == "yaml":
        import yaml

        print(yaml.safe_dump(json.loads(json.dumps(list(rows), default=str)),
                             sort_keys=False, default_flow_style=False), end="", file=stream)
    elif fmt == "name":
        if name is None:
            raise ValueError("this listing has no names")
        for row in rows:
            print(name(row), file=stream)
    elif not rows:
        print(empty, file=stream)
    else:
        shown = [c for c in columns if fmt == "wide" or not c.wide]
        table(rows, shown, out=stream)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], *,
          out: TextIO | None = None) -> None:
    cells = [[c.text(r) for c in columns] for r in rows]
    widths = [max(len(c.heading), *(len(row[i]) for row in cells))
              for i, c in enumerate(columns)]
    stream = out or sys.stdout
    print("  ".join(c.heading.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
          file=stream)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(),
              file=stream)


def cell(v: Any) -> str:
    """A value as a table shows it (``-`` for nothing)."""
    if v is None or v == "" or v == [] or v == {}:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".")
    if isinstance(v, dict):
        return ",".join(f"{k}={val}" for k, val in v.items())
    if isinstance(v, list):
        return ",".join(map(str, v))
    return str(v)


def duration(seconds: float) -> str:
    """``seconds`` as kubectl shows ages and durations (its HumanDuration): ``90s``,
    ``5m30s``, ``2h15m``, ``24h``, ``3d4h``, ``45d``, ``2y30d``."""
    s = round(abs(seconds))
    sign = "-" if seconds < 0 and s else ""
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 120:
        out = f"{s}s"
    elif m < 10:
        out = f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    elif m < 180:
        out = f"{m}m"
    elif h < 8:
        out = f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    elif h < 48:
        out = f"{h}h"
    elif h < 24 * 8:
        out = f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    elif d < 365 * 2:
        out = f"{d}d"
    elif d < 365 * 8:
        out = f"{d // 365}y{d % 365}d" if d % 365 else f"{d // 365}y"
    else:
        out = f"{d // 365}y"
    return sign + out


def timestamp(at: float) -> str:
    """An epoch time as RFC 3339 UTC (what Kubernetes JSON uses)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def relative(at: float, *, now: float | None = None) -> str:
    """``at`` from now: ``in 23h59m`` or ``5m ago``."""
    delta = at - (time.time() if now is None else now)
    return f"in {duration(delta)}" if delta >= 0 else f"{duration(-delta)} ago"
