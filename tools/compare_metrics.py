"""Compare two pipeline runs' headline numbers, timings aside: are the metrics of a refactor the same?

    python tools/compare_metrics.py BEFORE/data/metrics AFTER/data/metrics [NAME.json ...]

Prints, per metrics file, "identical (timings aside)" or each differing key with both values. A key counts
as a timing (and is skipped) when its path names a wall or CPU time, a speed-up, a per-second rate, a
prediction time or a peak memory: those differ between two runs of the same code. Of the twin speed benchmark
only the work done is compared (configurations, steps, requests). Exit 1 when any other value differs.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

TIMING_WORDS = ("time", "wall", "speedup", "ms_per_prediction", "per_s", "seconds", "cpu_s", "rss_mb")
#: files whose every number but the work done is a speed: only these keys of theirs are compared
SPEED_FILES = {"twin_speed.json": ("config", "finished_requests", "max_lora_rank", "max_loras", "rates", "served",
                                   "simulated_s", "steps")}


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


def work_done(speed: dict[str, Any], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows of a speed benchmark without their timings: what was simulated, not how fast."""
    return [{k: row.get(k) for k in keys} for row in speed.get("rows", [])]


def main(argv: list[str]) -> int:
    before, after = Path(argv[0]), Path(argv[1])
    names = argv[2:] or sorted(p.name for p in before.glob("*.json"))
    changed = 0
    for name in names:
        a, b = (json.loads((folder / name).read_text()) for folder in (before, after))
        if name in SPEED_FILES:
            a, b = (work_done(x, SPEED_FILES[name]) for x in (a, b))
        found = differences(a, b)
        changed += bool(found)
        print(name, "identical (timings aside)" if not found else f"{len(found)} differences")
        for line in found[:20]:
            print("   ", line)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
