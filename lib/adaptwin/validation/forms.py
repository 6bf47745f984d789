"""Every LoRA candidate form, run through the twin on serving runs it was not fitted to.

The calibration chooses the LoRA form on profiling rows only (`adaptwin.calibration.lora_forms`). This
module answers the reviewer's question on the serving runs themselves: would the choice have been different,
and how well does *choosing* hold on configurations the choice did not see? Each candidate's coefficients
(fitted on profiling rows, recorded in the calibration's ``fit_quality.lora.forms``) replace the chosen ones,
the twin re-simulates the runs, and

* ``in_sample``: each candidate's mean SMAPE over all the runs (what picking the best would look at);
* ``held_out``: for each A_max value (and each rate group) left out, the candidate with the lowest mean
  SMAPE on the *other* configurations is picked, and its SMAPE on the left-out configuration is kept: the
  honest error of a form chosen on serving runs (no coefficient is ever fitted on them).
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from adaptwin.calibration.models import LORA_TERMS
from adaptwin.io import write_json
from adaptwin.validation.runs import ValidationConfig, compare, scenario_for_run, simulate_runs

METRIC_COLS = ("throughput_smape_pct", "itl_smape_pct")


def form_calibrations(calibration_path: str | Path, out_dir: str | Path, top: int | None = None) -> dict[str, Path]:
    """One calibration file per candidate form of ``calibration_path`` (its fitted ``lora`` terms replaced, the
    measured ones, rank tile and registry copy, kept); with
    ``top``, only the ``top`` forms with the lowest held-out error on the profiling rows."""
    data = json.loads(Path(calibration_path).read_text())
    forms = sorted(data["fit_quality"]["lora"]["forms"], key=lambda f: f["held_out_pct"])[:top]
    written = {}
    for form in forms:
        variant = copy.deepcopy(data)
        kept = {k: v for k, v in data["lora"]["params"].items() if k not in LORA_TERMS}  # measured, not fitted
        variant["lora"] = {"form": "slots", "params": {**kept, **{t: float(form[f"coef_{t}"]) for t in LORA_TERMS}}}
        written[form["form"]] = write_json(Path(out_dir) / f"{form['form']}.json", variant)
    return written


def run_forms(sel: pl.DataFrame, calibration_path: str | Path, cfg: ValidationConfig,
              top: int | None = None) -> pl.DataFrame:
    """Per (form, run): the twin's errors on the serving runs ``sel`` (one model) under every candidate."""
    model = sel["model"].unique().to_list()
    if len(model) != 1:
        raise ValueError(f"runs.model: form check needs the runs of one model, got {model}")
    scenarios = [scenario_for_run(r, cfg) for r in sel.iter_rows(named=True)]
    frames = []
    with tempfile.TemporaryDirectory(prefix="adaptwin-forms-") as tmp:
        for name, path in form_calibrations(calibration_path, tmp, top).items():
            results = simulate_runs(scenarios, {model[0]: str(path)}, cfg.workers)
            frames.append(compare(sel, results, cfg).with_columns(pl.lit(name).alias("form")))
    return pl.concat(frames, how="diagonal_relaxed")


def _by_form(df: pl.DataFrame, metric: str) -> pl.DataFrame:
    return df.group_by("form").agg(pl.col(metric).mean()).sort(metric, "form")


def nested_selection(df: pl.DataFrame, by: str, metric: str = "throughput_smape_pct") -> dict[str, Any]:
    """Leave each value of ``by`` out, pick the form with the lowest mean ``metric`` on the rest, and score
    the pick on the value left out; the run-weighted mean of those scores and the picks."""
    ok = df.filter(pl.col(metric).is_not_null())
    picks, total, n = {}, 0.0, 0
    for value in sorted(ok[by].unique().to_list()):
        rest, held = ok.filter(pl.col(by) != value), ok.filter(pl.col(by) == value)
        if rest.height == 0:
            continue
        best = _by_form(rest, metric)["form"][0]
        scores = held.filter(pl.col("form") == best)[metric]
        picks[str(value)] = {"form": best, metric: float(scores.mean()), "runs": scores.len()}
        total += float(scores.sum())
        n += scores.len()
    return {"held_out_pct": total / n if n else None, "picks": picks}


def summarize_forms(df: pl.DataFrame) -> dict[str, Any]:
    """In-sample mean SMAPE per form and metric, and the held-out error of choosing on serving runs."""
    out: dict[str, Any] = {"in_sample": {}, "held_out": {}}
    for metric in METRIC_COLS:
        out["in_sample"][metric] = {r["form"]: r[metric] for r in _by_form(df, metric).iter_rows(named=True)}
        out["held_out"][metric] = {by: nested_selection(df, by, metric)
                                   for by in ("max_loras", "rate_group", "family")}
    return out
