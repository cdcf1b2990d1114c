"""Scripts change counters through incr(), which only sums the deltas: every script
that counts must write them at its end (lean() wraps it so). A script that skipped
the wrapper would leave the statistics and per-block counts behind."""

from __future__ import annotations

import re

from ipam import reassert, scripts


def every_script() -> dict[str, str]:
    out = {name: value for name, value in vars(scripts).items()
           if name.isupper() and name != "PRELUDE" and isinstance(value, str)}
    out.update({f"MANY[{i}]": v for i, v in enumerate(scripts.MANY.values())})
    out["reassert.REASSERT"] = reassert.REASSERT
    return out


def test_every_script_that_counts_writes_its_counts_at_the_end() -> None:
    counting = 0
    for name, source in every_script().items():
        if not re.search(r"\bincr\(", source):
            continue
        counting += 1
        assert "local function flush_counts()" in source, name
        tail = source.rstrip().splitlines()[-4:]
        assert tail == ["local ok, res = pcall(main)", "flush_counts()",
                        "if not ok then error(res, 0) end", "return res"], (name, tail)
    assert counting >= 10  # allocate, release, claim, the re-homes, repairs, reassert ...


def test_no_script_counts_with_a_direct_write_of_the_same_counters() -> None:
    for name, source in every_script().items():
        for key in ("'bu'", "COUNTS", "HOMES"):
            assert not re.search(r"HINCRBY', [^,]*" + re.escape(key), source), (name, key)
