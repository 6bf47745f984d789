"""Experiment helper (not part of the pipeline): the full-hour validation of every serving run in ONE process,
written to OUT.parquet every 20 runs (runs in a spread order, so a prefix is a fair sample if it is stopped),
and a comparison of two such frames (or of stage ``validate_twin``'s ``data/validation/runs.parquet``).

Why: stage ``validate_twin`` runs on Dask workers and writes nothing until every run is done; on a shared
2-core machine an experiment must run one simulation process at a time and be stoppable.

    PYTHONPATH=lib .venv/bin/python tools/experiments/validate_full.py CALIBRATION.json OUT.parquet
    PYTHONPATH=lib .venv/bin/python tools/experiments/validate_full.py --compare BASE.parquet NEW.parquet

Outcome (2026-12-02): 634 selected runs (490 compared) in 1,051 s on one core. See
tools/experiments/scheduler_visits.py for the numbers of the scheduler change.
"""

from __future__ import annotations

import sys
import time

import polars as pl

from adaptwin.calibration.costs import load_calibration
from adaptwin.twin import simulate
from adaptwin.validation import runs as val

FAMILIES = ["real_results", "heterogeneous_results"]


def run(calibration: str, out: str) -> None:
    """Simulate every serving run of `FAMILIES` with ``calibration``; the compared frame goes to ``out``."""
    cfg = val.ValidationConfig(workers=1)
    sel = val.serving_runs(pl.read_parquet("data/measurements/runs.parquet"), FAMILIES)
    sel = (sel.with_columns(((pl.int_range(pl.len()) * 7919) % pl.len()).alias("_o")).sort("_o").drop("_o"))
    cal = load_calibration(calibration)
    started, results = time.time(), []
    for i, row in enumerate(sel.iter_rows(named=True)):
        results.append(simulate(val.scenario_for_run(row, cfg), cal))
        if (i + 1) % 20 == 0 or i + 1 == sel.height:
            val.compare(sel[: i + 1], results, cfg).write_parquet(out)
            print(f"{i + 1}/{sel.height} {time.time() - started:.0f} s", flush=True)


def compare(base: str, new: str) -> None:
    """Per family: SMAPEs, starvation agreement and the A_max gap of both frames, on the runs both compared."""
    frames = {name: pl.read_parquet(path) for name, path in (("base", base), ("new", new))}
    common = frames["base"].join(frames["new"], on="run_id", how="semi")["run_id"]
    rows = []
    for name, df in frames.items():
        for fam, f in val.summarize(df.filter(pl.col("run_id").is_in(common.implode())))["families"].items():
            rows.append({"frame": name, "family": fam, "compared": f["n_compared"],
                         **{k: round(f[f"{k}_smape_pct"], 2) for k in ("throughput", "itl", "ttft")},
                         "starvation": round(f["starvation_agreement_pct"], 1),
                         **{f"gap_{k}": round(f["a_max_gap"][f"{k}_smape_pct"], 2) for k in ("throughput", "itl")}})
    with pl.Config(tbl_width_chars=200, tbl_cols=12):
        print(pl.DataFrame(rows).sort("family", "frame"))


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        run(sys.argv[1], sys.argv[2])
