"""Re-simulate every GPU of an ``adaptwin place`` output with the twin under other seeds.

    python tools/recheck_placement.py WORKLOAD.csv OUT_DIR CALIBRATION.json [SEED_OFFSET ...] [--workers N]

Why: a verified placement passed the twin at one seed per GPU; an independent check draws other arrivals
(seed offsets; 0 is the verification's own content seed, the placement was checked at offset 1). Prints one
line per offset: GPUs starved or failing for memory, the lowest throughput / offered load, the largest mean
TTFT. Exit 1 when any GPU starves or fails for memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

from adaptwin.calibration.costs import load_calibration
from adaptwin.placement.verified import from_document, recheck
from adaptwin.placement.workloads import read_workload


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, re-check every GPU at each seed offset, print one summary line per offset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload")
    parser.add_argument("out_dir")
    parser.add_argument("calibration")
    parser.add_argument("offsets", nargs="*", type=int, default=[0, 7])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    workload: pl.DataFrame = read_workload(args.workload)
    placement = from_document(json.loads((Path(args.out_dir) / "placement.json").read_text()), workload)
    calibration = load_calibration(args.calibration)
    failed = 0
    for offset in args.offsets:
        rows = recheck(placement, calibration, offset, workers=args.workers)
        bad = [g for g, v in enumerate(rows) if v["starved"] or v["memory_error"] or v["error"]]
        failed += len(bad)
        print(f"seed offset {offset}: {len(bad)} of {len(rows)} GPUs starved or failing for memory {bad[:20]}; "
              f"lowest throughput/offered {min(v['throughput_over_offered'] or 0.0 for v in rows):.3f}; "
              f"largest mean TTFT {max(v['ttft_mean_ms'] or 0.0 for v in rows) / 1000:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
