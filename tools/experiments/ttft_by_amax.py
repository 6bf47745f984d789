"""Experiment (not part of the pipeline): where the twin's TTFT parts from the real one, by family and A_max.

Reads a finished pipeline's per-run validation rows (`data/validation/runs.parquet`) and prints, for the runs
the real server did and did not starve, the median twin / real mean-TTFT ratio and both medians. Starved runs'
TTFT is queueing over the hour (hundreds of seconds); the unstarved runs' TTFT is the first step's wait plus the
prefill and any adapter load, where a missing mechanism shows.

    PYTHONPATH=lib .venv/bin/python tools/experiments/ttft_by_amax.py DATA

Outcome (2026-12-03, the registry-copy twin): on the unstarved 5.9 runs the twin's TTFT is 0.93 / 0.91 x the
real one at A_max 16 / 32, where it is seconds of queueing near saturation, and 0.57-0.78 x at A_max 64-192,
where it is short (real medians 169-270 ms, the twin's 84-139 ms); on the unstarved 5.6 runs 0.92-0.96 x at
A_max 8-32 and 1.24 x at 64. See the closing note.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl


def ttft_table(runs: pl.DataFrame, starved: bool) -> pl.DataFrame:
    """Per family and A_max: runs, median twin / real TTFT ratio, median SMAPE and the two medians (ms)."""
    rows = runs.filter(pl.col("real_ttft").is_not_null() & pl.col("twin_ttft").is_not_null()
                       & (pl.col("real_starved") == starved))
    return (rows.with_columns((pl.col("twin_ttft") / pl.col("real_ttft")).log().alias("log_ratio"))
            .group_by("family", "max_loras")
            .agg(pl.len().alias("runs"), pl.col("log_ratio").median().exp().round(3).alias("twin_over_real"),
                 pl.col("ttft_smape_pct").median().round(1).alias("median_smape_pct"),
                 pl.col("real_ttft").median().round(1).alias("real_ms"),
                 pl.col("twin_ttft").median().round(1).alias("twin_ms"))
            .sort("family", "max_loras"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the data folder of a finished pipeline")
    args = parser.parse_args()
    runs = pl.read_parquet(args.data / "validation" / "runs.parquet")
    pl.Config.set_tbl_rows(60)
    for starved in (False, True):
        print(f"runs the real server {'starved' if starved else 'did not starve'}:")
        print(ttft_table(runs, starved))


if __name__ == "__main__":
    main()
