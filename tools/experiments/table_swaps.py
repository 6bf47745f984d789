"""Experiment (not part of the pipeline): the twin on the scheduler-overhead tables' runs (data card 5.5),
which record what the serving runs do not: CPU -> GPU loads, steps, distinct adapters per batch and ITL of
600 s runs that swap adapters (served > A_max) at A_max 8-448. A profiling family, so any mechanism
chosen here never sees a serving run.

Each table row becomes a scenario (rank-8 adapters, S_max 8, every adapter at the row's per-adapter rate,
Poisson arrivals, 250 / 231 tokens per request as dummy_dataset_mean.json, 600 s, max-num-seqs 2048 as the serving runs: the tables do not record it) and is
simulated with the calibration at CALIBRATION (one process). Printed per A_max: real vs twin loads per
1,000 steps, ITL, distinct adapters and batch; the per-row frame is written to OUT.parquet.

    PYTHONPATH=lib .venv/bin/python tools/experiments/table_swaps.py data/calibration/llama-3.1-8b-instruct.json OUT.parquet [--all]
"""

from __future__ import annotations

import argparse
import time

import polars as pl

from adaptwin.calibration.costs import load_calibration
from adaptwin.twin.api import outputs, prepare
from adaptwin.twin.arrivals import make_workload
from adaptwin.twin.engine import run_engine

TABLE_INPUT, TABLE_OUTPUT = 250, 231


def scenario(row: dict) -> dict:
    """The twin scenario of one 5.5 table row (its configuration only)."""
    return {
        "model": "llama-3.1-8b-instruct",
        "server": {"max_loras": int(row["gpu_loras"]), "max_cpu_loras": int(row["cpu_loras"]),
                   "max_lora_rank": 8, "max_num_seqs": 2048},
        "adapters": [{"count": int(row["cpu_loras"]), "rank": 8, "rate": float(row["adapter_rates"])}],
        "arrivals": {"kind": "poisson"},
        "lengths": {"kind": "fixed", "input": TABLE_INPUT, "output": TABLE_OUTPUT},
        "duration_s": 600.0,
        "seed": 0,
    }


def simulate_row(row: dict, cal) -> dict:
    """Twin outputs of one row, with its loads, reloads and steps."""
    sc, c = prepare(scenario(row), cal)
    workload = make_workload(sc)
    run = run_engine(sc, c, workload)
    out = outputs(sc, workload, run, 0.0)
    return {"twin_itl": out["itl_mean_ms"], "twin_batch": out["mean_batch_size"],
            "twin_distinct": out["mean_distinct_adapters"], "twin_loads": run.scheduler.loads,
            "twin_reloads": run.scheduler.reloads, "twin_steps": run.steps,
            "twin_throughput": out["total_throughput"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("calibration")
    ap.add_argument("out")
    ap.add_argument("--all", action="store_true", help="also rows with a queue (avg_waiting_queue >= 1)")
    args = ap.parse_args()
    cal = load_calibration(args.calibration)
    t = pl.read_parquet("data/measurements/scheduler_overhead.parquet").filter(pl.col("steps") > 0)
    if not args.all:
        t = t.filter(pl.col("avg_waiting_queue") < 1.0)
    started, rows = time.time(), []
    for row in t.iter_rows(named=True):
        rows.append({**row, **simulate_row(row, cal)})
    df = pl.DataFrame(rows, infer_schema_length=None)
    df.write_parquet(args.out)
    print(f"{df.height} rows in {time.time() - started:.0f} s")
    report(df)


def report(df: pl.DataFrame) -> None:
    """Real vs twin per (swaps, A_max)."""
    df = df.with_columns((pl.col("cpu_loras") > pl.col("gpu_loras")).alias("swaps"))
    with pl.Config(tbl_rows=60, tbl_width_chars=250, tbl_cols=20):
        print(df.group_by("swaps", "gpu_loras").agg(
            pl.len(),
            (pl.col("max_lora_loads_from_memory_corrected") / pl.col("steps") * 1000).mean().round(1).alias("real_loads_kstep"),
            ((pl.col("twin_loads") + pl.col("twin_reloads")) / pl.col("twin_steps") * 1000).mean().round(1)
            .alias("twin_loads_kstep"),
            (pl.col("steps") / pl.col("twin_steps")).mean().round(3).alias("steps_ratio"),
            pl.col("mean_itl_ms").mean().round(2).alias("real_itl"), pl.col("twin_itl").mean().round(2),
            ((pl.col("twin_itl") / pl.col("mean_itl_ms") - 1) * 100).mean().round(1).alias("itl_bias_pct"),
            pl.col("mean_loras_by_batch").mean().round(1).alias("real_distinct"), pl.col("twin_distinct").mean().round(1),
            pl.col("avg_batch_size").mean().round(1).alias("real_batch"), pl.col("twin_batch").mean().round(1),
        ).sort("swaps", "gpu_loras"))


if __name__ == "__main__":
    main()
