"""An exam GPU's truth as the twin's expected outcome: the mean of several twin runs of it.

A surrogate predicts what the twin gives a GPU on average. One twin run adds the twin's own noise: Poisson
arrivals on light GPUs and, above all, the unpredictable arrivals, whose rates walk up or down by 1.5x every
300 s, so that one simulated hour realises anywhere from 0.6x to 1.9x the nominal load. Scored against one
run, an exam mixes that noise into the surrogate's error, and the score depends on the draw:
``tools/experiments/exam_draws.py`` measured main's Llama surrogate at 3.45 % throughput SMAPE on the fresh
set's swept draw and 5.29 / 4.44 / 4.49 % on the next three seeds. The twin validation averages draws for the
same reason (`adaptwin.validation.runs.mean_result`).

`with_draws` sweeps each exam scenario again at seeds seed + 1 .. seed + draws - 1 (resumable, like every
sweep), and averages the result columns of the swept row and its draws; the starvation verdict is taken on
the mean throughput against the twin's own bar (`adaptwin.rules.starvation_bar`: the ideal, or the mean tokens
that arrived when fewer), so the exam's truth is judged by the rule that labelled the training rows. Rows the
twin rejected or that hit a memory error are kept as swept (both are deterministic).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from adaptwin.rules import STARVATION_RATIO
from adaptwin.twin.scenario import scenario_id

#: suffix of an exam set scored on its swept run alone (beside the mean of draws, under the plain name)
ONE_DRAW = "_one_draw"

#: result columns averaged over the draws (the surrogate's targets and the throughput split)
MEAN_COLUMNS: tuple[str, ...] = (
    "total_throughput", "input_throughput", "output_throughput", "request_throughput", "itl_mean_ms",
    "ttft_mean_ms", "offered_throughput",
)


def replicas(frame: pl.DataFrame, draws: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Copies of each scenario of ``frame`` (its ``scenario_json``) at seeds seed + 1 .. seed + draws - 1, and
    each copy's scenario id -> the id of the row it repeats."""
    copies, parent = [], {}
    for row_id, text in zip(frame["scenario_id"].to_list(), frame["scenario_json"].to_list(), strict=True):
        scenario = json.loads(text)
        for offset in range(1, draws):
            copy = {**scenario, "seed": int(scenario.get("seed", 0)) + offset}
            copies.append(copy)
            parent[scenario_id(copy)] = row_id
    return copies, parent


def _usable() -> pl.Expr:
    return pl.col("error").is_null() & ~pl.col("memory_error").fill_null(True)


def _bar(columns: list[str]) -> pl.Expr:
    """`adaptwin.rules.starvation_bar` of the mean draw: the ideal, or the mean tokens that arrived if fewer
    (rows swept without the tokens that arrived keep the ideal)."""
    if "offered_throughput" not in columns:
        return pl.col("ideal_throughput")
    offered = pl.col("offered_throughput_mean").fill_null(pl.col("ideal_throughput"))
    return pl.min_horizontal(pl.col("ideal_throughput"), offered)


def mean_of_draws(swept: pl.DataFrame, extra: pl.DataFrame, parent: dict[str, str]) -> pl.DataFrame:
    """``swept`` with its `MEAN_COLUMNS` the mean over each row and its ``extra`` draws (``parent``: a draw's
    scenario id -> its row's), ``starved`` judged on the mean throughput, and ``twin_draws`` (runs averaged)
    and ``throughput_sd`` (their spread) added; unusable rows and draws are left out of the means."""
    cols = [c for c in MEAN_COLUMNS if c in swept.columns]
    own = swept.filter(_usable()).select(pl.col("scenario_id").alias("row"), *cols)
    draws = extra.filter(_usable()).select(
        pl.col("scenario_id").replace_strict(parent, default=None).alias("row"), *cols)
    means = (pl.concat([own, draws.cast(own.schema)]).drop_nulls("row").group_by("row")
             .agg(*(pl.col(c).mean() for c in cols), pl.len().alias("twin_draws"),
                  pl.col("total_throughput").std(ddof=0).alias("throughput_sd")))
    out = swept.join(means, left_on="scenario_id", right_on="row", how="left", suffix="_mean")
    usable = _usable() & pl.col("twin_draws").is_not_null()
    out = out.with_columns(
        *(pl.when(usable).then(pl.col(f"{c}_mean")).otherwise(pl.col(c)).alias(c) for c in cols),
        pl.when(usable).then(pl.col("total_throughput_mean") < STARVATION_RATIO * _bar(means.columns))
        .otherwise(pl.col("starved")).alias("starved"),
        pl.col("twin_draws").fill_null(1),
    )
    return out.drop(f"{c}_mean" for c in cols)


def with_draws(swept: pl.DataFrame, out_dir: str | Path, calibration: Any, draws: int,
               workers: int = 1) -> pl.DataFrame:
    """``swept`` (twin rows of a sweep) scored as the mean of ``draws`` runs per scenario: the extra runs are
    swept into ``out_dir`` (resumable) on ``workers`` processes; ``draws`` <= 1 returns ``swept`` itself."""
    from adaptwin.sweep import load_dataset, run_sweep

    if draws <= 1 or swept.height == 0:
        return swept
    copies, parent = replicas(swept, draws)
    engine = "dask" if workers > 1 and len(copies) > 4 * workers else "serial"
    run_sweep(copies, out_dir, calibration=calibration, engine=engine, n_workers=max(workers, 1),
              chunk_size=50, batch_size=2, progress=False)
    return mean_of_draws(swept, load_dataset(out_dir), parent)


def exam_sets(swept: pl.DataFrame, name: str, out_dir: str | Path, calibration: Any, draws: int,
              workers: int = 1) -> tuple[pl.DataFrame, list[Any]]:
    """An exam's rows scored on the mean of ``draws`` runs (`with_draws`) and its evaluation sets: ``name`` on
    that mean, and with ``draws`` > 1 ``name`` + `ONE_DRAW` on the swept run alone."""
    from adaptwin.surrogate.evaluate import twin_set

    rows = with_draws(swept, out_dir, calibration, draws, workers)
    sets = [twin_set(rows, name)]
    if draws > 1:
        sets.append(twin_set(swept, name + ONE_DRAW))
    return rows, sets
