"""Experiment (not part of the pipeline): where the full-hour validation's throughput / ITL SMAPE comes from.

Reads a validation frame (``data/validation/runs.parquet`` of stage ``validate_twin``, or any frame of
`adaptwin.validation.runs.validate`) and the measurement tables, and prints per family:

* the error per cell (real starved or not, S_max, A_max, swapping or not, rate group, served), with each cell's
  *contribution*: the sum of its runs' SMAPE terms divided by the family's compared runs, so the contributions of
  a partition add up to the family's mean SMAPE;
* per cell, twin vs real per-step quantities the 2 s time series allow: mean running batch, mean waiting
  queue, mean KV usage (real ``gpu_cache_usage`` inside the window) and the signed biases of throughput and ITL.

    PYTHONPATH=lib .venv/bin/python tools/experiments/error_cells.py RUNS.parquet [MEASUREMENTS_DIR] [--by COL,COL]

Outcome (2026-12-02, full-hour validation of every run, calibration of commit 0bc5567; contributions in points of
the family's mean SMAPE, biases = mean of twin / real - 1):

| family | real starved | swaps | runs | throughput contrib. | ITL contrib. | thr. bias % | ITL bias % | running real / twin |
|--------|--------------|-------|------|---------------------|--------------|-------------|------------|---------------------|
| 5.6    | yes          | yes   | 63   | 4.62 of 5.19        | 4.82 of 9.91 | +10.2       | -9.4       | 488 / 494           |
| 5.6    | no           | yes   | 49   | 0.29                | 4.20         | +0.3        | -9.7       | 126 / 121           |
| 5.6    | any          | no    | 19   | 0.28                | 0.88         | +1.1        | -4.6       | 199 / 197           |
| 5.9    | yes          | yes   | 188  | 4.55 of 5.04        | 4.09 of 8.50 | +8.8        | -5.9       | 558 / 577           |
| 5.9    | no           | yes   | 122  | 0.22                | 3.46         | +0.5        | -7.7       | 127 / 126           |
| 5.9    | any          | no    | 49   | 0.26                | 0.95         | +0.5        | +0.6       | 239 / 250           |

Within starved swapping runs the error sits at A_max <= 32 (5.6: 3.37 throughput points from 44 runs, ITL -11.4 %;
5.9: 2.25 from 76 runs, -10.0 %) and at A_max 64-96 (5.9: 1.89 from 76 runs). The batches agree (running within
1-3 %); the real KV usage there is 0.55-0.71 (A_max <= 32), so those batches are bound by adapters, not by KV:
the twin's steps are too short. Loads are rare there (0.03-0.2 per s), and the ITL gap grows with the served
adapters at a fixed A_max while the batch shrinks (5.6 S_max 16 A_max 32, 1.6/0.8/0.4: -5.6 % at 64 served,
-11.1 % at 384): the waiting queue of other adapters' requests, which vLLM's admission loop walks every step,
grows with them (tools/experiments/scheduler_visits.py). S_max 32 without swaps is -8.5 / -10.2 % ITL in runs
that keep up (no profiling family has S_max 16/32 at a large batch: left alone).

After commits d795ec7 (scheduler per visited request) and 2d4a93e (rank tiles of S_max 32 from 5.3), full hour,
every run (tools/experiments/validate_full.py, one core, 752 s): 5.6 throughput / ITL / TTFT SMAPE 3.32 / 5.66 /
12.24 %, starvation agreement 97.7 %; 5.9 3.25 / 6.98 / 19.01 %, 99.2 %. S_max 32 ITL bias 5.6 -11.2 -> -2.7 %,
5.9 -7.9 -> +2.1 % (S_max 16 runs unchanged by the tiles, byte for byte). Still the largest cell: starved
swapping runs, 2.77 of 3.32 throughput points (5.6, +6.0 % bias) and 2.72 of 3.25 (5.9, +4.2 %), with running,
waiting, KV usage and preemptions within a few % of the real 2 s series (tools/experiments/scheduler_visits.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

CELL_COLUMNS = ("starved", "max_lora_rank", "a_max_band", "swaps", "rate_group")


def real_series(measurements: Path, run_ids: list[str]) -> pl.DataFrame:
    """Per run, the real means over the benchmark window: running, waiting, KV usage."""
    ts = pl.read_parquet(measurements / "timeseries.parquet").filter(
        pl.col("run_id").is_in(run_ids) & pl.col("in_window").fill_null(False))
    return ts.group_by("run_id").agg(pl.col("num_running").mean().alias("real_running"),
                                     pl.col("num_waiting").mean().alias("real_waiting"),
                                     pl.col("gpu_cache_usage").mean().alias("real_kv"))


def with_cells(df: pl.DataFrame) -> pl.DataFrame:
    """The frame's compared runs with the cell columns and signed biases (%)."""
    ok = df.filter(pl.col("throughput_smape_pct").is_not_null())
    return ok.with_columns(
        pl.col("real_starved").alias("starved"),
        (pl.col("served_adapters") > pl.col("max_loras")).alias("swaps"),
        pl.when(pl.col("max_loras") <= 32).then(pl.lit("a<=32")).when(pl.col("max_loras") <= 96)
        .then(pl.lit("a64-96")).otherwise(pl.lit("a>=128")).alias("a_max_band"),
        ((pl.col("twin_throughput") / pl.col("real_throughput") - 1) * 100).alias("thr_bias"),
        ((pl.col("twin_itl") / pl.col("real_itl") - 1) * 100).alias("itl_bias"),
        (pl.col("twin_ttft") - pl.col("real_ttft")).alias("ttft_diff_ms"),
    )


def cell_table(df: pl.DataFrame, by: list[str], n_family: int) -> pl.DataFrame:
    """Per cell: runs, contribution to the family's mean SMAPE (points), mean SMAPE and biases, batches."""
    return df.group_by(by).agg(
        pl.len().alias("n"),
        (pl.col("throughput_smape_pct").sum() / n_family).round(2).alias("thr_contrib"),
        (pl.col("itl_smape_pct").sum() / n_family).round(2).alias("itl_contrib"),
        pl.col("throughput_smape_pct").mean().round(1).alias("thr_smape"),
        pl.col("itl_smape_pct").mean().round(1).alias("itl_smape"),
        pl.col("thr_bias").mean().round(1), pl.col("itl_bias").mean().round(1),
        pl.col("real_running").mean().round(1), pl.col("twin_mean_batch_size").mean().round(1).alias("twin_running"),
        pl.col("real_waiting").mean().round(0),
        pl.col("real_kv").mean().round(2),
        pl.col("twin_mean_distinct_adapters").mean().round(1).alias("twin_distinct"),
    ).sort("itl_contrib", descending=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("measurements", nargs="?", default="data/measurements")
    ap.add_argument("--by", default=",".join(CELL_COLUMNS), help="cell columns, comma-separated")
    ap.add_argument("--one-at-a-time", action="store_true", help="also one table per cell column")
    args = ap.parse_args()
    df = with_cells(pl.read_parquet(args.runs))
    df = df.join(real_series(Path(args.measurements), df["run_id"].to_list()), on="run_id", how="left")
    by = args.by.split(",")
    with pl.Config(tbl_rows=80, tbl_width_chars=260, tbl_cols=30):
        for (fam,), f in df.group_by("family", maintain_order=True):
            print(f"\n== {fam}: {f.height} runs, throughput SMAPE {f['throughput_smape_pct'].mean():.2f} %, "
                  f"ITL SMAPE {f['itl_smape_pct'].mean():.2f} %")
            if args.one_at_a_time:
                for col in by:
                    print(cell_table(f, [col], f.height))
            print(cell_table(f, by, f.height))


if __name__ == "__main__":
    main()
