"""``stickyip demo``: a thin shim that runs the local end-to-end demo (the top-level
``demo`` package, see docs/demo.md) from the source checkout this package lives in. The
demo is not product code and is not installed, so outside a checkout it says so."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent


def _in_checkout() -> bool:
    return (CHECKOUT / "demo" / "cli.py").is_file() and (CHECKOUT / "kubestandin").is_dir()


def add_parser(sub: Any, name: str) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help="run the local end-to-end demo (from a source checkout)",
        description="Run Redis, the webhook, the scheduler, the API stand-in and (as root) "
        "three nodes with the eBPF datapath, and play a StatefulSet story. Same as "
        "'make demo' or 'python -m demo' in the checkout.")
    if not _in_checkout():
        p.set_defaults(handler=_outside_checkout)
        return
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    demo_cli: Any = importlib.import_module("demo.cli")
    demo_cli.add_arguments(p)

    async def run(args: argparse.Namespace) -> int:
        code: int = await demo_cli.run(demo_cli.settings_from(args))
        return code

    p.set_defaults(handler=run)


async def _outside_checkout(args: argparse.Namespace) -> int:
    print("error: 'stickyip demo' runs from a source checkout of stickyip (it needs the "
          "demo/ and kubestandin/ directories next to the stickyip package, which are "
          f"not installed; looked in {CHECKOUT}). Clone the repository and run "
          "'make demo' there.", file=sys.stderr)
    return 2
