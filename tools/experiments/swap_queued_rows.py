"""Experiment (not part of the pipeline): does an adapter swap cost more than its copy in the 5.5 rows *with* a
queue? Profiling family only (data card 5.5).

Why: in the full-hour validation the serving runs that keep up show an ITL gap (real - twin) that grows with
the twin's loads per step (about +75 ms per load per step at S_max 16, +115 ms at S_max 32, by a regression on
serving runs that is a diagnosis only, never a fit). `adaptwin.calibration.models.fit_swap` chose ``copy_only``
on the busy 5.5 rows *without* a queue; the rows with a queue were left out because their step mix was less
certain and their scheduler share was charged per queued request. With the scheduler charged per visited
request (`adaptwin.calibration.inputs.visited_estimate`), the queued rows can be read the same way: mean step
(duration / steps) minus the twin's step, scheduler, LoRA (distinct adapters: the measured count / 0.93, at
most A_max, the twin's excess over the tables) and 5.3 copy, against CPU -> GPU loads per step.

    PYTHONPATH=lib .venv/bin/python tools/experiments/swap_queued_rows.py data/calibration/llama-3.1-8b-instruct.json

Outcome (2026-12-02, calibration of commit d795ec7): candidates of `fit_swap`, leave-one-A_max-out MAE (ms per
step). Rows without a queue (135, 89 swapping): copy_only 2.408, per_load 2.429 (7.4 ms), per_slot 2.447
(0.028 ms). Rows with a queue (621, 557 swapping): copy_only 5.009, per_load 5.023 (1.6 ms per load),
per_slot 4.859 (0.034 ms per slot and load, i.e. 0.6 ms per load at A_max 16). The profiling data put a swap
within ~2 ms of its copy, not ~75 ms: the load-correlated ITL gap of the serving runs is not a per-load step
cost the tables can see (more loads than the twin forms, or another cost correlated with cold adapters, would
need the serving runs' load counts, which no copied file has). The queued rows' residual grows with the queue
(median 1.7 ms at <= 100 waiting, 8.4 ms at > 15k) but not with the visited estimate; recomputation after
preemption (absent from the tables' step mix) is the likely reason, so nothing was changed.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import polars as pl

from adaptwin.calibration import inputs
from adaptwin.calibration.inputs import load_tables
from adaptwin.calibration.lora_forms import TABLE_INPUT_TOKENS, table_output_tokens
from adaptwin.calibration.models import swap_candidates, swap_residual_ms, twin_distinct

#: the tables' distinct adapters per batch are ~0.93x the count the twin forms (tools/experiments/table_swaps.py)
TWIN_OVER_TABLE_DISTINCT = 1 / 0.93


def main() -> None:
    cal = json.loads(open(sys.argv[1]).read())
    step, sched, lora = cal["step"]["params"], cal["scheduler"]["params"], cal["lora"]["params"]
    copy_ms = cal["loading"]["params"]["8"]["8"]
    tables = load_tables(sys.argv[2] if len(sys.argv) > 2 else "data/measurements")
    rows = tables.scheduler_overhead.filter((pl.col("avg_batch_size") >= 5.0) & (pl.col("steps") > 0))
    pts = rows.select(
        pl.col("source"), pl.col("gpu_loras").cast(pl.Int64).alias("max_loras"),
        pl.col("cpu_loras").cast(pl.Int64).alias("served"),
        *inputs.step_mix(TABLE_INPUT_TOKENS, table_output_tokens(tables)),
        (pl.col("duration") / pl.col("steps")).alias("step_s"),
        (pl.col("max_lora_loads_from_memory_corrected") / pl.col("steps")).alias("loads_per_step"))
    for name, sel in {"no queue": pts["mean_waiting"] < 1, "queue": pts["mean_waiting"] >= 1}.items():
        p = pts.filter(sel)
        queued = p["mean_waiting"].to_numpy() >= 1
        distinct = np.where(queued, np.minimum(p["distinct_adapters"].to_numpy() * TWIN_OVER_TABLE_DISTINCT,
                                               p["max_loras"].to_numpy()), twin_distinct(p))
        y = swap_residual_ms(p, step, sched, lora, copy_ms, distinct)
        _, scores = swap_candidates(p, y)
        print(f"{name}: {p.height} rows, {int((p['served'] > p['max_loras']).sum())} swapping")
        for form, score in scores.items():
            print(f"  {form}: " + ", ".join(f"{k} {v:.3f}" for k, v in score.items()))
        with pl.Config(tbl_rows=10):
            print(p.with_columns(pl.Series("residual_ms", y))
                  .with_columns(pl.col("mean_waiting").cut([100, 1000, 5000, 15000]).alias("waiting"))
                  .group_by("waiting").agg(pl.len(), pl.col("residual_ms").median().round(2)).sort("waiting"))


if __name__ == "__main__":
    main()
