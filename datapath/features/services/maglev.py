"""Maglev consistent hashing (Eisenbud et al., NSDI 2016): the lookup table that
maps each of M slots to a backend so that removing one backend moves only the flows
it held. Pure."""

from __future__ import annotations

import hashlib


def _h(name: str, salt: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), key=salt, digest_size=8).digest(),
                          "big")


def maglev_table(backends: list[str], m: int) -> list[int]:
    """Slot -> index into ``backends`` (names must be unique; ``m`` prime > len)."""
    n = len(backends)
    if n == 0:
        return []
    if n > m:
        raise ValueError(f"{n} backends do not fit a Maglev table of {m} slots")
    offsets = [_h(b, b"offset") % m for b in backends]
    skips = [_h(b, b"skip") % (m - 1) + 1 for b in backends]
    nexts = [0] * n
    table = [-1] * m
    filled = 0
    while True:
        for i in range(n):
            c = (offsets[i] + nexts[i] * skips[i]) % m
            while table[c] >= 0:
                nexts[i] += 1
                c = (offsets[i] + nexts[i] * skips[i]) % m
            table[c] = i
            nexts[i] += 1
            filled += 1
            if filled == m:
                return table
