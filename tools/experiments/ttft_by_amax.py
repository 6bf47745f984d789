"""Experiment (not part of the pipeline): where the twin's TTFT parts from the real one, by family and A_max.

Reads a finished pipeline's per-run validation rows (`data/validation/runs.parquet`) and prints, for the runs
the real server did and did not starve, the median twin / real mean-TTFT ratio and both medians. Starved runs'
TTFT is queueing over the hour (hundreds of seconds); the unstarved runs' TTFT is the first step's wait plus the
prefill and any adapter load, where a missing mechanism shows.

    PYTHONPATH=lib .venv/bin/python tools/experiments/ttft_by_amax.py DATA

Outcome (2026-12-03, the registry-copy twin): on the unstarved 5.9 runs the twin's TTFT is 0.93 / 0.91 x the
real one at A_max 16 / 32, where it is seconds of queueing near saturation, and 0.57-0.78 x at A_max 64-192,
where it is short (real medians 169-270 ms, the twin's 84-139 ms); on the unstarved 5.6 runs 0.92-0.96 x at
A_max 8-32 and 1.24 x at 64. Where both TTFTs are short, the twin's is short by 25 + 0.48 ms per running
request on 5.9 (correlation 0.61) and 18 + 0.29 ms on 5.6 (0.70), hardly related to adapter loads (0.11, 0.21):
the first step of a request costs more in the real server the fuller the batch. See the closing note.
Resolved the next day: the real and twin MEDIAN TTFT agree, the gap is a tail, and the tail is the API server's
/metrics renders (tools/experiments/metrics_scrape.py, `adaptwin.twin.frontend`). With them the unstarved 5.9
runs at A_max 64-192 read 0.80-0.93 x (one draw).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

#: runs whose real and twin mean TTFT are both under this (ms): no queueing over the hour
SHORT_TTFT_MS = 500.0


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


def gap_fit(runs: pl.DataFrame, family: str) -> str:
    """On the unstarved runs with short TTFTs: real - twin TTFT (ms) fitted to a line in the real running
    batch, and its correlation with the running batch and with the twin's adapter loads per request."""
    rows = runs.filter((pl.col("family") == family) & ~pl.col("real_starved").fill_null(True)
                       & (pl.col("real_ttft") < SHORT_TTFT_MS) & (pl.col("twin_ttft") < SHORT_TTFT_MS))
    gap = (rows["real_ttft"] - rows["twin_ttft"]).to_numpy()
    running = rows["real_mean_running"].to_numpy()
    loads = (rows["twin_adapter_loads"] / rows["twin_finished_requests"]).to_numpy()
    intercept_slope = np.linalg.lstsq(np.column_stack([np.ones_like(running), running]), gap, rcond=None)[0]
    return (f"{family}: {len(gap)} runs, median gap {np.median(gap):.1f} ms = {intercept_slope[0]:.1f} + "
            f"{intercept_slope[1]:.3f} ms x running requests; correlation with running "
            f"{np.corrcoef(gap, running)[0, 1]:.2f}, with adapter loads per request "
            f"{np.corrcoef(gap, loads)[0, 1]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the data folder of a finished pipeline")
    args = parser.parse_args()
    runs = pl.read_parquet(args.data / "validation" / "runs.parquet")
    pl.Config.set_tbl_rows(60)
    for starved in (False, True):
        print(f"runs the real server {'starved' if starved else 'did not starve'}:")
        print(ttft_table(runs, starved))
    print(f"real - twin TTFT on the unstarved runs with both under {SHORT_TTFT_MS:.0f} ms:")
    for family in runs["family"].unique().sort().to_list():
        print(" ", gap_fit(runs, family))


if __name__ == "__main__":
    main()
