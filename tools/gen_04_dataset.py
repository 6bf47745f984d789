"""Generate notebooks/04_dataset.ipynb (run: python tools/gen_04_dataset.py)."""

from new_notebook import parameters_cell, write_notebook

CELLS = [
    ("md", """
# 04 · Twin-generated dataset

**Question.** Placement needs to know, for thousands of candidate GPUs, whether a set of adapters is served
without starvation and at what throughput. Can the Digital Twin label enough single-GPU scenarios, fast enough,
to train surrogates for that (the paper's Table 3: rows, wall time, scenarios per second)?

**Method.** `adaptwin.dataset` samples single-GPU scenarios over the design space placement explores (served
adapters 8-576, A_max from the candidate list and startable per the calibration, rank mixes 8 / 8-16 / 8-16-32,
equal, real-run-like, lognormal and power-law rates, offered load log-uniform around a capacity proxy so the
starvation boundary is dense, Poisson and unpredictable arrivals, ShareGPT lengths), adds the exact
configurations of the real serving runs, and `grid_variants` scenarios on those runs' server configurations
with other rates and ranks, and `mix_scenarios` shaped like placement's GPU groups (`adaptwin.dataset.mixes`:
Zipf, 5.9-like hot-and-cold, Azure-trace-like and lognormal popularity, any A_max placement may pick, up to
576 adapters), and `short_mix_scenarios` of the same mix draws simulated over `short_window_s` only: a
sixth of the twin's CPU each, their bias against the hour learnt by the surrogate, which takes the window as a
feature and predicts the hour. A *fresh* test set (`fresh_scenarios`, another seed and a popularity law never trained on) is
swept apart into `data/dataset/fresh/<model>/` for notebook 05. `adaptwin.sweep` runs them through the twin on a Dask cluster into a
resumable Parquet dataset (`data/dataset/<model>/chunk-*.parquet`, one row per scenario, keyed by its hash).
"""),
    ("code", parameters_cell("04_dataset")),
    ("code", """
import polars as pl

from adaptwin.dataset.stage import DatasetConfig, run_stage
from adaptwin.paths import resolve

config = DatasetConfig.from_params(dict(
    models=models, n_scenarios=n_scenarios, include_real_grid=include_real_grid,
    real_grid_fraction=real_grid_fraction, grid_variants=grid_variants, duration_s=duration_s, seed=seed,
    load_range=load_range, boundary_fraction=boundary_fraction, boundary_band=boundary_band,
    unpredictable_fraction=unpredictable_fraction, engine=engine, n_workers=n_workers,
    scheduler_address=scheduler_address, chunk_size=chunk_size, batch_size=batch_size,
    duration_check_scenarios=duration_check_scenarios, duration_check_short_s=duration_check_short_s,
    mix_scenarios=mix_scenarios, mix_laws=mix_laws, short_mix_scenarios=short_mix_scenarios,
    short_window_s=short_window_s, fresh_scenarios=fresh_scenarios, fresh_seed=fresh_seed,
    fresh_laws=fresh_laws))
summary = run_stage(config, resolve(data_dir), resolve(data_dir) / "calibration", progress=False)
"""),
    ("md", """
**Dataset throughput (like the paper's Table 3).** Rows in the dataset, rows evaluated by this run (a resumed
run evaluates only what is missing), its wall time and scenarios per second on this machine, and the twin's
own speed (simulated seconds per wall-clock second, median over rows).
"""),
    ("code", """
columns = ["model", "rows", "usable_rows", "memory_errors", "errors", "starved_fraction", "evaluated_now",
           "wall_time_s", "scenarios_per_s", "twin_cpu_s_per_scenario", "simulated_s_per_wall_s"]
table = pl.DataFrame([{c: entry[c] for c in columns} for entry in summary.values()])
for entry in summary.values():
    print(f"{entry['model']}: {entry['rows']} scenarios ({entry['rows_by_window_s']} by simulated window, s), "
          f"{entry['scenarios_per_s']} scenarios/s on this machine")
table
"""),
    ("md", """
**Would a shorter simulated window do?** Some dataset scenarios re-simulated at `duration_check_short_s`:
SMAPE against the dataset rows (at `duration_s`, the real runs' 3,600 s in the default profile), per target,
over all, starved and not starved scenarios, agreement of the verdict, and how much wall time it would save.
"""),
    ("code", """
pl.DataFrame([{"model": m, **e["duration_check"]} for m, e in summary.items() if e["duration_check"]])
"""),
    ("md", """
**Result.** The tables above are this run's numbers; `data/dataset/summary.json` holds them with the knobs.

**Caveats.** Timings depend on the machine and on what else runs on it. Rows whose configuration cannot start
(memory error) are kept in the dataset but not used for training (placement checks memory first). A starved
GPU never settles (its backlog grows for the whole window), so its targets depend on the window: the dataset
uses the real runs' 3,600 s, which makes each scenario cost seconds and keeps the default dataset small; the
paper profile has the paper's row counts (hours on 2 cores, or a Dask cluster via `scheduler_address`).
"""),
]

if __name__ == "__main__":
    write_notebook("notebooks/04_dataset.ipynb", CELLS)
