"""The ``train_surrogates`` stage (notebook 05): train, save, evaluate and plot, per model.

Writes ``<data>/models/<model>/`` (cbm files, ``metadata.json`` with the metrics, ``table.csv`` = the Table
4/5-like comparison), ``<figures>/surrogates/`` and ``<data>/metrics/surrogates.json`` (one entry per model,
the headline keys the claims report reads: ``real_runs.throughput_smape_pct``,
``real_runs.starvation_macro_f1``, ``ms_per_prediction_single``, ``ms_per_prediction_batched``, ``heldout.*``,
``learners.<name>.*``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from adaptwin.figures import surrogates as figs
from adaptwin.io import write_json
from adaptwin.surrogate.evaluate import evaluate, json_safe, real_runs
from adaptwin.surrogate.train import TrainResult, save, train_surrogates
from adaptwin.sweep import load_dataset


def train_model(model: str, data_dir: str | Path, knobs: dict[str, Any], calibration: Any) -> TrainResult:
    """Train the four surrogates of ``model`` on ``<data>/dataset/<model>``."""
    dataset = load_dataset(Path(data_dir) / "dataset" / model)
    return train_surrogates(dataset, model, calibration=calibration, n_search=knobs["n_search"],
                            max_iterations=knobs["max_iterations"], test_fraction=knobs["test_fraction"],
                            seed=knobs["seed"], threads=knobs["threads"],
                            throughput_transform=knobs["throughput_transform"], cv_folds=knobs.get("cv_folds", 3))


def load_real_runs(data_dir: str | Path, model: str, real_runs_model: str) -> pl.DataFrame | None:
    """The real runs to test ``model``'s surrogates on (only ``real_runs_model`` has them in the corpus)."""
    path = Path(data_dir) / "measurements" / "runs.parquet"
    if model != real_runs_model or not path.exists():
        return None
    return real_runs(pl.read_parquet(path), model)


def run_model(model: str, data_dir: str | Path, figures_dir: str | Path, knobs: dict[str, Any]) -> dict[str, Any]:
    """Train, evaluate, save and plot one model; returns its entry of surrogates.json."""
    from adaptwin.twin.costs import load_calibration

    data_dir = Path(data_dir)
    calibration = load_calibration(data_dir / "calibration" / f"{model}.json")
    result = train_model(model, data_dir, knobs, calibration)
    runs = load_real_runs(data_dir, model, knobs["real_runs_model"])
    metrics, table = evaluate(result, runs, baselines=tuple(knobs["baselines"]), seed=knobs["seed"],
                              singles=knobs.get("timing_singles", 200))
    surrogate = result.surrogate
    metrics.update({"dataset_rows": result.data.frame.height, "train_rows": len(result.train_idx),
                    "test_rows": len(result.test_idx), "train_time_s": round(result.train_time_s, 3),
                    "feature_names": list(surrogate.feature_names),
                    "tokens_per_request": surrogate.tokens_per_request})
    metrics = json_safe(metrics)
    surrogate.metadata["metrics"] = {k: v for k, v in metrics.items() if k != "learners"}
    out_dir = data_dir / "models" / model
    save(surrogate, out_dir)
    from adaptwin.io import atomic_write

    atomic_write(out_dir / "table.csv", lambda p: table.write_csv(p))
    fig_dir = Path(figures_dir) / "surrogates"
    figs.feature_importance(surrogate, fig_dir, f"feature_importance_{model}")
    figs.dataset_coverage(result.data.frame, fig_dir, f"dataset_coverage_{model}")
    held = result.data.frame[result.test_idx]
    figs.predicted_vs_actual(held, surrogate.predict(held), fig_dir, f"heldout_{model}",
                             f"{model}: CatBoost on held-out twin scenarios", actual_label="twin")
    if runs is not None and runs.height:
        from adaptwin.surrogate.evaluate import real_set

        real = real_set(runs, surrogate.tokens_per_request)
        figs.predicted_vs_actual(real.truth, surrogate.predict(real.features), fig_dir, f"real_runs_{model}",
                                 f"{model}: CatBoost (trained on twin data only) vs real serving runs")
    return metrics


def run_stage(models: list[str], data_dir: str | Path, figures_dir: str | Path, knobs: dict[str, Any]) -> dict:
    """Every model; writes ``<data>/metrics/surrogates.json`` and returns it."""
    results = {model: run_model(model, data_dir, figures_dir, knobs) for model in models}
    write_json(Path(data_dir) / "metrics" / "surrogates.json", results)
    return results


def table(data_dir: str | Path, model: str) -> pl.DataFrame:
    """The saved Table 4/5-like comparison of ``model``."""
    return pl.read_csv(Path(data_dir) / "models" / model / "table.csv")
