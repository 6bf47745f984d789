"""Compare two pipeline runs' headline numbers, timings aside: are the metrics of a refactor the same?

    python tools/compare_metrics.py BEFORE/data/metrics AFTER/data/metrics [NAME.json ...]

Prints, per metrics file, "identical (timings aside)" or each differing key with both values. A key counts
as a timing (and is skipped) when its path names a wall time, a speed-up, a per-second rate or a prediction
time: those differ between two runs of the same code. Exit 1 when any other value differs.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

TIMING_WORDS = ("time", "wall", "speedup", "ms_per_prediction", "per_s", "seconds")


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Every non-timing key path where ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in {'after' if k not in a else 'before'}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = [f"{path}: {len(a)} items before, {len(b)} after"] if len(a) != len(b) else []
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            out += differences(x, y, f"{path}[{i}]")
        return out
    same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    if same or any(word in path for word in TIMING_WORDS):
        return []
    return [f"{path}: {a!r} -> {b!r}"]


def main(argv: list[str]) -> int:
    before, after = Path(argv[0]), Path(argv[1])
    names = argv[2:] or sorted(p.name for p in before.glob("*.json"))
    changed = 0
    for name in names:
        found = differences(json.loads((before / name).read_text()), json.loads((after / name).read_text()))
        changed += bool(found)
        print(name, "identical (timings aside)" if not found else f"{len(found)} differences")
        for line in found[:20]:
            print("   ", line)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
