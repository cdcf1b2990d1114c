"""Applies a generated BIRD config: writes it atomically and runs ``birdc configure``."""

from __future__ import annotations

import asyncio
import os

from datapath.errors import BirdFailure


class BirdControl:
    def __init__(self, *, config_path: str, socket_path: str, birdc: str = "birdc") -> None:
        self.config_path = config_path
        self.socket_path = socket_path
        self.birdc = birdc

    def write(self, text: str) -> None:
        d = os.path.dirname(self.config_path) or "."
        os.makedirs(d, exist_ok=True)
        tmp = f"{self.config_path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    async def configure(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.birdc, "-s", self.socket_path, "configure",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
        except (OSError, TimeoutError) as e:
            raise BirdFailure(f"birdc configure failed: {e}") from e
        text = out.decode(errors="replace")
        if proc.returncode != 0 or ("Reconfigured" not in text and "Reconfiguration" not in text):
            raise BirdFailure(f"birdc configure: {text.strip()[:300]}")
