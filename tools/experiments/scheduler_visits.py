"""Experiment (not part of the pipeline): is the scheduler's cost per step a cost per *waiting request in the
queue* or per *waiting request the scan visits*? Profiling family only (data card 5.5).

The twin charges ``running x a + visited x b`` per step (`adaptwin.calibration.costs.Calibration.scheduler_time`),
``visited`` being the waiting requests vLLM 0.8.5's admission loop examines (all of them when the batch already
holds A_max adapters and the queue holds only other adapters' requests; a few when the loop stops on the token
budget or the KV cache). The calibration fits a and b on the 5.5 tables' ``total_scheduling_time / steps``
against ``avg_batch_size`` and ``avg_waiting_queue`` (`adaptwin.calibration.models.fit_scheduler`): b per
*queued* request, which the twin then charges per *visited* one. In 5.5 rows that walk the whole queue
(A_max <= 32, ~17k waiting) the scheduler takes 5-7.5 ms per step, 0.3-0.38 us per waiting request; rows at
A_max >= 128 with the same queue take 1-2 ms (their scan stops early); the fit's 0.125 us averages the two.

Here each 5.5 row becomes the twin scenario of `table_swaps.scenario` (its configuration only), simulated for
600 s (one process) while the engine's scheduler calls are counted, giving the twin's mean running and mean
visited per step. Candidates, fitted on the rows (non-negative least squares, relative residuals like the
calibration) and scored in-sample and held out (leave one A_max out, leave one (CSV, rate) group out):

* ``queue`` (today's): running, waiting queue;
* ``visited``: running, the twin's visited count;
* ``visited+queue``: both.

    PYTHONPATH=lib .venv/bin/python tools/experiments/scheduler_visits.py CALIBRATION.json OUT.parquet [--limit N]
    PYTHONPATH=lib .venv/bin/python tools/experiments/scheduler_visits.py --report OUT.parquet

Outcome (2026-12-02, Llama-3.1-8B calibration of the commit before d795ec7, all 788 rows, 7 min on one core).
Mean |relative error| of the scheduler time per step (%), in-sample / leave-one-A_max-out / leave-one-group-out:

| candidate (regressors)                         | per visit | in-sample | held-out A_max | held-out group |
|------------------------------------------------|-----------|-----------|----------------|----------------|
| queue (running, waiting queue; today's)        | -         | 22.8      | 24.1           | 23.4           |
| visited (running, twin's visited)              | 0.28 us   | 11.5      | 11.9           | 12.1           |
| visited+queue                                  | 0.28 us   | 8.6       | 9.1            | 8.9            |
| proxy, adapter-bound at >= 0.8 x A_max          | 0.21 us   | 12.9      | 13.1           | 13.5           |
| proxy, adapter-bound at >= 0.9 x A_max          | 0.21 us   | 13.1      | 13.2           | 13.8           |
| proxy, adapter-bound at >= 0.95 x A_max         | 0.18 us   | 14.8      | 16.1           | 15.6           |

(proxy rows: fitted on `adaptwin.calibration.inputs.visited_estimate`, which the calibration can compute from the
table alone, and scored with the twin's own visited counts.) The twin visits 77 % / 74 % / 68 % / 54 % of the
real queue at A_max 8 / 16 / 32 / 64 and ~0 at A_max >= 192. The calibration now fits the scheduler on the
0.8 proxy (commit d795ec7; the pipeline's absolute least squares gives 0.23 us per visit, r2 0.66 -> 0.94).
Serving runs (never fitted), sampled validation (``sample_per_cell=2``, 140 runs, one worker): 5.6 throughput /
ITL SMAPE 3.68 / 8.24 -> 3.10 / 7.60 %, 5.9 3.44 / 8.67 -> 3.16 / 8.31 %. Full hour, every run
(tools/experiments/validate_full.py, 490 compared): 5.6 throughput / ITL / TTFT SMAPE 5.19 / 9.91 / 17.13 ->
4.05 / 8.35 / 15.48 %, starvation agreement 98.5 -> 99.2 %; 5.9 5.04 / 8.50 / 20.70 -> 4.41 / 7.87 / 20.03 %,
99.2 -> 99.4 %; better at every A_max <= 64 of both families (5.6 A_max 8: 5.29 / 10.20 -> 2.98 / 7.43 %),
unchanged (+-0.05) at A_max >= 128; ITL better in all 13 rate groups, throughput in 11.

What is left (twin vs real every 2 s after 600 s, this calibration): starved 5.6 run _32_384_16_ (1.6/0.8/0.4)
running 673 / 672, waiting 25,343 / 25,710, KV 0.84 / 0.82, preemptions 1,743 / 1,678, ITL 119.8 / 109.7 ms;
_32_64_16_ 770 / 789, 25,105 / 24,953, 0.98 / 0.98, 4,626 / 4,077, 124.8 / 120.5 ms. Same batch, queue and KV,
but steps still short, and 6 ms more so with 384 served adapters (the twin's scan walks ~25k requests per step)
than with 64 (the scan stops at the queue's head): the serving runs imply ~0.45 us per visit, the 5.5 tables
0.21-0.28 us, and the 5.5 step times (duration / steps, tools/experiments/swap_queued_rows.py) do not carry an
extra per-visit cost either (-0.4 ms per 1k visited). Not fitted: no profiling family supports it.

The ``visited+queue`` form would need a second scheduler term in the twin (0.016 us per
queued request, ~0.3 ms per step at 20k waiting): not worth a change of the JSON schema.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import polars as pl
from scipy.optimize import lsq_linear

from adaptwin.calibration.costs import load_calibration
from adaptwin.twin import engine as engine_mod
from adaptwin.twin.api import prepare
from adaptwin.twin.arrivals import make_workload

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from table_swaps import scenario  # noqa: E402

CANDIDATES = {"queue": ("running", "waiting"), "visited": ("running", "visited"),
              "visited+queue": ("running", "visited", "waiting")}


class CountingTimer(engine_mod.StepTimer):
    """The engine's step timer, remembering the (running, visited) of the last scheduler charge."""

    last: tuple[int, int] = (0, 0)

    def scheduler(self, running: int, visited: int) -> float:
        CountingTimer.last = (running, visited)
        return super().scheduler(running, visited)


class CountingRecorder(engine_mod.Recorder):
    """The engine's recorder, adding up steps x (running, visited) of every segment."""

    def segment(self, start, k, d0, beta, t0, total, running, distinct=0) -> None:
        super().segment(start, k, d0, beta, t0, total, running, distinct)
        stats = self.__dict__.setdefault("_stats", [0, 0, 0])
        stats[0] += k
        stats[1] += k * CountingTimer.last[0]
        stats[2] += k * CountingTimer.last[1]


def simulate_row(row: dict, cal) -> dict:
    """Twin steps, mean running and mean visited per step of one 5.5 row's scenario."""
    sc, c = prepare(scenario(row), cal)
    rec_holder = {}

    class Rec(CountingRecorder):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            rec_holder["rec"] = self

    engine_mod.StepTimer, engine_mod.Recorder = CountingTimer, Rec
    try:
        engine_mod.run_engine(sc, c, make_workload(sc))
    finally:
        engine_mod.StepTimer, engine_mod.Recorder = CountingTimer.__mro__[1], CountingRecorder.__mro__[1]
    steps, running, visited = rec_holder["rec"].__dict__.get("_stats", [0, 0, 0])
    return {"twin_steps": steps, "twin_running": running / max(steps, 1), "twin_visited": visited / max(steps, 1)}


def fit(X: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Non-negative least squares with relative residuals (as `adaptwin.calibration.fits.fit_linear`)."""
    w = 1.0 / np.maximum(y, 1e-6)
    return lsq_linear(X[mask] * w[mask, None], (y * w)[mask], bounds=(0.0, np.inf), method="bvls").x


def held_out(x_fit: np.ndarray, x_score: np.ndarray, y: np.ndarray, df: pl.DataFrame) -> dict[str, float]:
    """Mean relative error (%) of fits on ``x_fit`` that leave one A_max value (``gpu_loras``) or one rate group
    out, scored on ``x_score`` for the rows left out; also over the rows with a queue above 1,000."""
    out = {}
    big = df["avg_waiting_queue"].to_numpy() > 1000
    for by in ("gpu_loras", "group"):
        labels = df[by].to_numpy()
        err = np.empty(len(y))
        for v in np.unique(labels):
            m = labels == v
            err[m] = np.abs(x_score[m] @ fit(x_fit, y, ~m) - y[m]) / y[m] * 100
        out[f"held_out_{by}_pct"] = float(err.mean())
        out[f"held_out_{by}_queue_rows_pct"] = float(err[big].mean())
    return out


def report(path: str) -> None:
    """In-sample and held-out mean |relative error| of each candidate; the coefficients."""
    df = pl.read_parquet(path).with_columns(
        (pl.col("total_scheduling_time") / pl.col("steps")).alias("sched_s"),
        (pl.col("source") + "/" + pl.col("rate").cast(pl.Utf8)).alias("group"))
    y = df["sched_s"].to_numpy()
    cols = {"running": df["avg_batch_size"].to_numpy(), "waiting": df["avg_waiting_queue"].to_numpy(),
            "visited": df["twin_visited"].to_numpy()}
    rows = []
    for name, terms in CANDIDATES.items():
        X = np.column_stack([np.ones_like(y)] + [cols[t] for t in terms])
        coef = fit(X, y, np.ones(len(y), bool))
        err_in = np.abs(X @ coef - y) / y * 100
        out = {"form": name, **{f"coef_{t}": float(c) for t, c in zip(("intercept", *terms), coef, strict=True)},
               "in_sample_pct": float(err_in.mean())}
        out.update(held_out(X, X, y, df))
        rows.append(out)
    # fitted on a proxy the calibration can compute from the table alone (the whole queue is visited in rows
    # that swap and whose batch holds >= theta x A_max adapters, none otherwise), scored with the twin's visits
    full = (df["mean_loras_by_batch"] / df["gpu_loras"]).to_numpy()
    swaps = (df["cpu_loras"] > df["gpu_loras"]).to_numpy()
    Xt = np.column_stack([np.ones_like(y), cols["running"], cols["visited"]])
    for theta in (0.8, 0.9, 0.95):
        proxy = np.where(swaps & (full >= theta), cols["waiting"], 0.0)
        Xp = np.column_stack([np.ones_like(y), cols["running"], proxy])
        coef = fit(Xp, y, np.ones(len(y), bool))
        out = {"form": f"proxy>={theta}", **{f"coef_{t}": float(c) for t, c in
                                             zip(("intercept", "running", "visited"), coef, strict=True)},
               "in_sample_pct": float((np.abs(Xt @ coef - y) / y * 100).mean())}
        out.update(held_out(Xp, Xt, y, df))
        rows.append(out)
    with pl.Config(tbl_width_chars=250, tbl_cols=20):
        print(pl.DataFrame(rows))
        print(df.with_columns((pl.col("twin_visited") / pl.col("avg_waiting_queue").clip(1)).alias("visited_share"))
              .group_by("gpu_loras").agg(pl.len(), pl.col("avg_waiting_queue").mean().round(0),
                                         pl.col("twin_visited").mean().round(0),
                                         pl.col("visited_share").median().round(3),
                                         (pl.col("sched_s") * 1000).mean().round(3).alias("sched_ms"),
                                         pl.col("avg_batch_size").mean().round(0),
                                         pl.col("twin_running").mean().round(0)).sort("gpu_loras"))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        report(sys.argv[2])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("calibration")
    ap.add_argument("out")
    ap.add_argument("--limit", type=int, help="simulate only every k-th row so that about N rows are kept")
    args = ap.parse_args()
    cal = load_calibration(args.calibration)
    t = pl.read_parquet("data/measurements/scheduler_overhead.parquet").filter(pl.col("steps") > 0)
    if args.limit and args.limit < t.height:
        t = t.gather_every(int(np.ceil(t.height / args.limit)))
    started, rows = time.time(), []
    for i, row in enumerate(t.iter_rows(named=True)):
        rows.append({**row, **simulate_row(row, cal)})
        if i % 25 == 0:
            print(f"{i + 1}/{t.height} rows, {time.time() - started:.0f} s", file=sys.stderr)
    pl.DataFrame(rows, infer_schema_length=None).write_parquet(args.out)
    print(f"{len(rows)} rows in {time.time() - started:.0f} s")
    report(args.out)


if __name__ == "__main__":
    main()
