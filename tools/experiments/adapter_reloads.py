"""Experiment (not part of the pipeline): validation before/after charging the adapter reloads of vLLM's
set-order LRU activation (`adaptwin.twin.adapter_cache`), on the same runs, split by whether the run swaps
adapters (served > A_max). Inputs are two per-run frames of `validation.compare` (one worker, 3600 s,
``pool_means=False``, calibration with the ``slot_step_prefill+offset`` LoRA form):

    PYTHONPATH=lib .venv/bin/python tools/experiments/adapter_reloads.py BEFORE.parquet AFTER.parquet

Outcome (2026-12-02, Llama-3.1-8B; throughput / ITL / TTFT SMAPE %, starvation agreement %):
5.9 spread sample (``sample_per_cell=2``, 102 compared): 4.01 / 9.60 / 27.68, 99.0 -> 3.44 / 8.63 / 26.28, 99.0
(swapping runs, 53: 5.92 / 12.00 / 27.67 -> 4.82 / 10.14 / 24.97, ITL bias -9.0 % -> -7.4 %; runs that never
swap unchanged). 5.6, all 131 compared (before = the earlier engineer's frame of the same calibration): 6.20 / 12.70 / 23.77, 97.7 -> 5.11 / 9.92 / 16.99, 98.5 (swapping runs,
112: ITL bias -12.7 % -> -9.6 %, throughput bias +7.3 % -> +5.8 %). The swapping runs keep most of their ITL
under-prediction: the reload chain explains part of the swap cost, not all of it.
"""

from __future__ import annotations

import sys

import polars as pl


def summary(suffix: str) -> list[pl.Expr]:
    """Mean SMAPEs, mean signed biases and starvation agreement of one side of the joined frame."""
    return [
        pl.len(),
        pl.col("throughput_smape_pct" + suffix).mean().round(2).alias("throughput"),
        pl.col("itl_smape_pct" + suffix).mean().round(2).alias("itl"),
        pl.col("ttft_smape_pct" + suffix).mean().round(2).alias("ttft"),
        ((pl.col("twin_throughput" + suffix) / pl.col("real_throughput") - 1) * 100).mean().round(1)
        .alias("throughput_bias"),
        ((pl.col("twin_itl" + suffix) / pl.col("real_itl") - 1) * 100).mean().round(1).alias("itl_bias"),
        (pl.col("starvation_agrees" + suffix).mean() * 100).round(1).alias("starvation"),
    ]


def main() -> None:
    before, after = (pl.read_parquet(p).filter(pl.col("throughput_smape_pct").is_not_null()) for p in sys.argv[1:3])
    joined = before.join(after, on="run_id", suffix="_after").with_columns(
        (pl.col("served_adapters") > pl.col("max_loras")).alias("swaps"))
    print(f"{joined.height} runs compared on both sides")
    for suffix, name in (("", "before"), ("_after", "after")):
        print(name)
        print(joined.select(summary(suffix)))
        print(joined.group_by("swaps").agg(summary(suffix)).sort("swaps"))


if __name__ == "__main__":
    main()
