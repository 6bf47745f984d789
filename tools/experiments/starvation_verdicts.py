"""Experiment (not part of the pipeline): can another starvation verdict beat the classifier at 0.5, judged on
training rows it was not fitted to? And how firm is an exam's macro-F1?

Part 1 refits a finished pipeline's classifier and throughput regressor (their searched configurations) on
5 folds of its training rows and scores verdict rules on the out-of-fold rows and on the held-out split, by
window (600 s rows, 3600 s rows): the classifier at several thresholds, the regressor's ratio under 0.9, their
union, and a logistic stack of the two fitted on the out-of-fold predictions. The exams are not used to choose.
Part 2 scores the pipeline's surrogate on its exams (mean of `surrogates.exam_draws` twin runs, swept already)
and bootstraps the GPUs for a 90 % interval of the macro-F1.

    PYTHONPATH=lib .venv/bin/python tools/experiments/starvation_verdicts.py DATA [--draws 3]

Outcome (2026-12-03, the registry-copy twin): no rule beats the classifier at 0.5 by more than the fold
noise (Llama out of fold 0.965, union 0.957, stack 0.966; Qwen 0.975, 0.967, 0.976); see the closing note.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from adaptwin.calibration.costs import load_calibration
from adaptwin.dataset.stage import fresh_dir
from adaptwin.layout import Layout
from adaptwin.surrogate.draws import exam_sets
from adaptwin.surrogate.model import Surrogate, basis_rate, load
from adaptwin.surrogate.train import catboost_model, cv_splits, prepare, split_indices, transform
from adaptwin.sweep import load_dataset

MODELS = ("llama-3.1-8b-instruct", "qwen-2.5-7b-instruct")


def training_rows(data: Path, model: str) -> pl.DataFrame:
    """The rows the stage trained on: the dataset and the placement-driven GPUs."""
    layout = Layout.at(data)
    parts = [load_dataset(layout.dataset(model))]
    coached = layout.models(model) / "placement_train"
    if list(coached.glob("chunk-*.parquet")):
        parts.append(load_dataset(coached))
    return pl.concat(parts, how="diagonal_relaxed")


def refit(meta: dict, target: str, x: np.ndarray, y: np.ndarray):
    """The stage's searched configuration of ``target`` fitted on ``x``."""
    spec = meta["targets"][target]
    model = catboost_model(target == "starved", spec["params"], spec["iterations"], 0, 2)
    return model.fit(x, y)


def stack_inputs(p: np.ndarray, throughput: np.ndarray, ideal: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    ratio = np.maximum(throughput, 1e-9) / (0.9 * np.maximum(ideal, 1e-9))
    return np.column_stack([np.log(p / (1 - p)), np.log(ratio)])


def rules(y: np.ndarray, p: np.ndarray, ratio: np.ndarray, stacked: np.ndarray) -> dict[str, float]:
    """Macro-F1 of each verdict rule against the twin's labels ``y``."""
    out = {f"p>={t}": f1_score(y, p >= t, average="macro") for t in (0.4, 0.5, 0.6)}
    out["ratio<0.9"] = f1_score(y, ratio < 0.9, average="macro")
    out["p>=0.5 or ratio<0.9"] = f1_score(y, (p >= 0.5) | (ratio < 0.9), average="macro")
    out["stack"] = f1_score(y, stacked >= 0.5, average="macro")
    return {k: round(float(v), 3) for k, v in out.items()}


def verdict_rules(data: Path, model: str) -> None:
    surrogate: Surrogate = load(model, data / "models")
    meta = surrogate.metadata
    rows = prepare(training_rows(data, model), load_calibration(Layout.at(data).calibration(model)))
    train, test = split_indices(rows.frame.height, 0.2, meta["seed"])
    x, label = rows.x, rows.frame["starved"].to_numpy().astype(int)
    ideal, window = rows.frame["ideal_throughput"].to_numpy(), rows.frame["window_s"].to_numpy()
    kind = meta["targets"]["total_throughput"]["transform"]
    y_thr = transform("total_throughput", kind, rows.frame["total_throughput"].to_numpy().astype(float),
                      basis_rate(kind, x, rows.feature_names), rows.tokens_per_request)
    oof_p, oof_t = np.full(len(label), np.nan), np.full(len(label), np.nan)
    for fit, val in cv_splits(len(train), 5, 99):
        fit, val = train[fit], train[val]
        oof_p[val] = refit(meta, "starved", x[fit], label[fit]).predict_proba(x[val])[:, 1]
        raw = refit(meta, "total_throughput", x[fit], y_thr[fit]).predict(x[val])
        oof_t[val] = surrogate.inverse("total_throughput", raw, x[val])
    stack = LogisticRegression().fit(stack_inputs(oof_p[train], oof_t[train], ideal[train]), label[train])
    final = surrogate.predict_matrix(x[test])
    parts = {"out of fold": (train, oof_p[train], oof_t[train]),
             "held out": (test, final["starvation_probability"], final["total_throughput"])}
    for name, (idx, p, t) in parts.items():
        stacked = stack.predict_proba(stack_inputs(p, t, ideal[idx]))[:, 1]
        for w in (None, 600.0, 3600.0):
            m = np.ones(len(idx), bool) if w is None else window[idx] == w
            if m.sum() == 0:
                continue
            y = label[idx][m]
            print(f"{model} {name} {'all' if w is None else f'{w:.0f} s'} ({m.sum()} rows, {y.sum()} starved):",
                  rules(y, p[m], t[m] / np.maximum(ideal[idx][m], 1e-9), stacked[m]), flush=True)


def exam_intervals(data: Path, model: str, draws: int) -> None:
    surrogate = load(model, data / "models")
    calibration = load_calibration(Layout.at(data).calibration(model))
    rng = np.random.default_rng(0)
    models = data / "models" / model
    for name, swept, extra in (("fresh", fresh_dir(data, model), models / "fresh_draws"),
                               ("groups", models / "placement_groups", models / "placement_groups_draws")):
        if not list(Path(swept).glob("chunk-*.parquet")):
            continue
        _, sets = exam_sets(load_dataset(swept), name, extra, calibration, draws)
        truth = sets[0].truth["starved"].to_numpy()
        said = surrogate.predict(sets[0].features)["starved"].to_numpy()
        boot = [f1_score(truth[i], said[i], average="macro")
                for i in (rng.integers(0, len(truth), len(truth)) for _ in range(2000))]
        print(f"{model} {name}: {len(truth)} GPUs, {truth.sum()} starved, {(said != truth).sum()} wrong verdicts, "
              f"F1 {f1_score(truth, said, average='macro'):.3f} (90 % interval {np.percentile(boot, 5):.3f}-"
              f"{np.percentile(boot, 95):.3f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the data folder of a finished pipeline")
    parser.add_argument("--draws", type=int, default=3, help="surrogates.exam_draws of that pipeline")
    args = parser.parse_args()
    for model in MODELS:
        verdict_rules(args.data, model)
        exam_intervals(args.data, model, args.draws)


if __name__ == "__main__":
    main()
