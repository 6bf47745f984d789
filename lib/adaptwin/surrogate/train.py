"""Train the CatBoost surrogates of one base model on a twin-generated dataset, with a tuned search.

Targets and transforms (why): throughput spans three decades (a few hundred to ~10^4 tok/s) and is scored by
SMAPE, a *relative* error, so the regressors fit ``log`` targets (RMSE in log space ~ relative error), or,
with ``throughput_transform="ratio"``, throughput / ideal, which is 1 for every starvation-free GPU and so
leaves the model only the starved region to learn. ITL and TTFT are fitted in log space too. Starvation is a
CatBoost classifier (Logloss) on the twin's verdict (total throughput below 0.9 x ideal).

Search: for every target, ``n_search`` configurations (CatBoost's defaults first, then random draws of depth,
learning rate, L2, random strength and bagging temperature) are scored by ``cv_folds``-fold cross-validation
with early stopping on each held-out fold; the best mean validation loss wins and is refitted on all training
rows with its mean best iteration count. A held-out ``test_fraction`` of the scenarios never takes part (evaluation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adaptwin.io import write_json
from adaptwin.surrogate.features import BURSTY_KIND, WINDOW_FEATURE, feature_names, features_frame
from adaptwin.surrogate.model import (
    CLASS_TARGET,
    REGRESSION_TARGETS,
    SURROGATE_VERSION,
    Surrogate,
    basis_rate,
)

TRANSFORMS: tuple[str, ...] = ("log", "ratio", "log_ratio", "log_capacity_ratio")
#: floor of log targets (a GPU that finished nothing has zero throughput; log needs a positive number)
LOG_FLOOR = 1e-3


class TrainingError(ValueError):
    """Training inputs that cannot be used, naming the field and value."""


@dataclass
class TrainingData:
    """Features and targets of usable dataset rows (no sweep error, no memory error)."""

    frame: pl.DataFrame  # scenario_id, features, targets, ideal_throughput
    feature_names: tuple[str, ...]
    tokens_per_request: float

    @property
    def x(self) -> np.ndarray:
        """Feature matrix in `feature_names` order."""
        return self.frame.select(self.feature_names).to_numpy().astype(float)


def prepare(dataset: pl.DataFrame, calibration: Any = None, physics: bool = True) -> TrainingData:
    """Features and targets of a sweep dataset; drops errored and memory-error rows (placement never asks
    about configurations that cannot start: it checks memory first). ``physics`` = False leaves out the
    slot-physics features (the earlier feature set, kept to measure what they bring). Rows of more than one
    simulated window add the window as a feature (`features.WINDOW_FEATURE`; predictions are for the longest,
    `prediction_window`), rows of both arrival kinds the kind (`features.BURSTY_FEATURE`; default Poisson)."""
    usable = dataset.filter(pl.col("error").is_null() & ~pl.col("memory_error").fill_null(True))
    if usable.height == 0:
        raise TrainingError(f"dataset: no usable rows out of {dataset.height} (all errored or memory errors)")
    window = "duration_s" in usable.columns and usable["duration_s"].n_unique() > 1  # hand-made frames lack them
    kinds = usable["arrivals"] if "arrivals" in usable.columns else pl.Series([], dtype=pl.String)
    bursty = bool((kinds == BURSTY_KIND).any()) and not bool((kinds == BURSTY_KIND).all())
    feats = features_frame(usable, calibration, window, bursty)
    frame = pl.concat([usable.select("scenario_id", *REGRESSION_TARGETS, CLASS_TARGET, "ideal_throughput",
                                     "finished_requests"), feats], how="horizontal")
    positive = frame.filter((pl.col("sum_rate") > 0) & (pl.col("ideal_throughput") > 0))
    tpr = float((positive["ideal_throughput"] / positive["sum_rate"]).median()) if positive.height else float("nan")
    if not np.isfinite(tpr) or tpr <= 0:
        raise TrainingError(f"dataset: ideal_throughput / sum_rate has no positive median ({tpr!r})")
    return TrainingData(frame, feature_names(calibration is not None, physics, window, bursty), tpr)


def prediction_window(data: TrainingData) -> float | None:
    """The window a surrogate trained on ``data`` predicts for: the longest it was trained on (None: one
    window only, no window feature). The shorter ones are the cheap rows; the longest is what is wanted."""
    if WINDOW_FEATURE not in data.feature_names:
        return None
    return float(data.frame[WINDOW_FEATURE].max())


def transform(target: str, kind: str, y: np.ndarray, rate: np.ndarray, tokens_per_request: float) -> np.ndarray:
    """Natural units -> the space the regressor fits (inverse: `Surrogate.inverse`); ``rate`` is
    `model.basis_rate` of the rows (the offered load, or the servable load for ``log_capacity_ratio``)."""
    if kind == "log":
        return np.log(np.maximum(y, LOG_FLOOR))
    if kind == "ratio":
        return y / np.maximum(rate * tokens_per_request, LOG_FLOOR)
    if kind in ("log_ratio", "log_capacity_ratio"):  # log(throughput / ideal): 0 wherever nothing waits
        return np.log(np.maximum(y, LOG_FLOOR) / np.maximum(rate * tokens_per_request, LOG_FLOOR))
    raise TrainingError(f"surrogates.{target} transform: unknown {kind!r}; known: {', '.join(TRANSFORMS)}")


def target_rows(data: TrainingData, target: str) -> np.ndarray:
    """Boolean mask of rows where ``target`` is defined (latencies need at least one finished request)."""
    y = data.frame[target]
    ok = y.is_not_null().to_numpy()
    if target in ("itl_mean_ms", "ttft_mean_ms"):
        finished = data.frame["finished_requests"].fill_null(0).to_numpy() > 0
        values = y.cast(pl.Float64).fill_null(float("nan")).to_numpy()
        ok &= finished & np.isfinite(values) & (values > 0)
    return ok


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out row indices (a seeded permutation; rows are in scenario-id order)."""
    if not 0 < test_fraction < 1:
        raise TrainingError(f"surrogates.test_fraction: expected in (0, 1), got {test_fraction!r}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


# ---- search ------------------------------------------------------------------------------------------------
def candidate_params(n_search: int, seed: int) -> list[dict[str, Any]]:
    """CatBoost's defaults, then ``n_search - 1`` random configurations (seeded)."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = [{"depth": 6, "learning_rate": 0.08, "l2_leaf_reg": 3.0}]
    for _ in range(max(0, n_search - 1)):
        out.append({
            "depth": int(rng.integers(4, 9)),
            "learning_rate": float(np.exp(rng.uniform(np.log(0.05), np.log(0.3)))),
            "l2_leaf_reg": float(np.exp(rng.uniform(np.log(0.5), np.log(30.0)))),
            "random_strength": float(rng.uniform(0.0, 2.0)),
            "bagging_temperature": float(rng.uniform(0.0, 1.0)),
        })
    return out


def catboost_model(classifier: bool, params: dict[str, Any], iterations: int, seed: int, threads: int):
    """An unfitted CatBoost learner with the project's fixed settings (loss, seed, quiet, no files)."""
    from catboost import CatBoostClassifier, CatBoostRegressor

    common = dict(iterations=iterations, random_seed=seed, thread_count=threads, verbose=False,
                  allow_writing_files=False, **params)
    return CatBoostClassifier(loss_function="Logloss", **common) if classifier else \
        CatBoostRegressor(loss_function="RMSE", **common)


def fit_target(x: np.ndarray, y: np.ndarray, classifier: bool, *, n_search: int, max_iterations: int,
               seed: int, threads: int, folds: int = 3,
               searched: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """K-fold search, then refit the best configuration on all of ``x``; returns (model, search record).

    Every candidate is trained ``folds`` times with early stopping on the held-out fold; its score is the mean
    validation loss, its tree count the mean best iteration (small datasets make a single split too noisy to
    choose between configurations). With ``searched`` (the record of an earlier search on most of the same
    rows) the search is skipped and its best configuration refitted: a retrain after adding a few hundred rows
    costs one fit instead of ``n_search x folds``."""
    if len(y) < 10:
        raise TrainingError(f"surrogates: only {len(y)} training rows for a target (need >= 10)")
    if searched is not None:
        best = searched["best"]
        final = catboost_model(classifier, best["params"], best["iterations"], seed, threads)
        final.fit(x, y)
        return final, {**searched, "reused": True}
    splits = cv_splits(len(y), folds, seed + 1)
    trials = []
    for params in candidate_params(n_search, seed):
        losses, iterations = [], []
        for fit_idx, val_idx in splits:
            if classifier and len(np.unique(y[fit_idx])) < 2:
                continue  # one class only in this fold: nothing to learn or tune against
            model = catboost_model(classifier, params, max_iterations, seed, threads)
            model.fit(x[fit_idx], y[fit_idx], eval_set=(x[val_idx], y[val_idx]), early_stopping_rounds=50,
                      use_best_model=True)
            losses.append(float(next(iter(model.get_best_score()["validation"].values()))))
            iterations.append(int(model.get_best_iteration()) + 1)
        trials.append({"params": params, "validation_loss": float(np.mean(losses)) if losses else float("inf"),
                       "iterations": int(np.mean(iterations)) if iterations else max_iterations})
    best = min(trials, key=lambda t: t["validation_loss"])
    final = catboost_model(classifier, best["params"], best["iterations"], seed, threads)
    final.fit(x, y)
    return final, {"best": best, "trials": trials}


def cv_splits(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train, validation) index pairs over a seeded permutation of ``n`` rows."""
    if folds < 2:
        raise TrainingError(f"surrogates.cv_folds: expected >= 2, got {folds!r}")
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    return [(np.sort(np.concatenate(parts[:i] + parts[i + 1:])), np.sort(parts[i])) for i in range(folds)]


# ---- the whole set -----------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """A trained surrogate set and what produced it."""

    surrogate: Surrogate
    data: TrainingData
    train_idx: np.ndarray
    test_idx: np.ndarray
    search: dict[str, Any] = field(default_factory=dict)
    train_time_s: float = 0.0


def train_surrogates(dataset: pl.DataFrame, model: str, out_dir: str | Path | None = None, *,
                     calibration: Any = None, n_search: int = 4, max_iterations: int = 600,
                     test_fraction: float = 0.2, seed: int = 0, threads: int = 2,
                     throughput_transform: str = "log", cv_folds: int = 3, physics: bool = True,
                     searched: dict[str, Any] | None = None) -> TrainResult:
    """Train the four surrogates of ``model`` and, if ``out_dir`` is given, write them there
    (``<target>.cbm`` + ``metadata.json``; metrics are added by `adaptwin.surrogate.evaluate`). ``searched``
    (a `TrainResult.search` of an earlier call) reuses its configurations instead of searching again."""
    start = time.perf_counter()
    data = prepare(dataset, calibration, physics)
    train_idx, test_idx = split_indices(data.frame.height, test_fraction, seed)
    x = data.x
    transforms = {"total_throughput": throughput_transform, "itl_mean_ms": "log", "ttft_mean_ms": "log"}
    models, search, targets_meta = {}, {}, {}
    for i, target in enumerate((*REGRESSION_TARGETS, CLASS_TARGET)):
        rows = train_idx[target_rows(data, target)[train_idx]]
        y = data.frame[target].to_numpy()[rows]
        if target == CLASS_TARGET:
            y = y.astype(int)
        else:
            rate = basis_rate(transforms[target], x, data.feature_names)[rows]
            y = transform(target, transforms[target], y.astype(float), rate, data.tokens_per_request)
        models[target], search[target] = fit_target(
            x[rows], y, target == CLASS_TARGET, n_search=n_search, max_iterations=max_iterations,
            seed=seed + 17 * i, threads=threads, folds=cv_folds, searched=(searched or {}).get(target))
        targets_meta[target] = {
            "file": f"{target}.cbm", "transform": transforms.get(target, "logit"), "train_rows": int(len(rows)),
            "params": search[target]["best"]["params"], "iterations": int(models[target].tree_count_),
        }
    metadata = {
        "version": SURROGATE_VERSION, "model": model, "feature_names": list(data.feature_names),
        "targets": targets_meta, "tokens_per_request": data.tokens_per_request, "starvation_threshold": 0.5,
        "calibration": getattr(calibration, "raw", None) or None, "dataset_rows": int(data.frame.height),
        "train_rows": int(len(train_idx)), "test_rows": int(len(test_idx)), "seed": seed, "n_search": n_search,
        "cv_folds": cv_folds, "predict_window_s": prediction_window(data),
        "search": {t: s["trials"] for t, s in search.items()},
    }
    surrogate = Surrogate(metadata, models, calibration)
    result = TrainResult(surrogate, data, train_idx, test_idx, search, time.perf_counter() - start)
    metadata["train_time_s"] = round(result.train_time_s, 3)
    if out_dir is not None:
        save(surrogate, out_dir)
    return result


def save(surrogate: Surrogate, out_dir: str | Path) -> Path:
    """Write ``<target>.cbm`` files and ``metadata.json`` (atomically) into ``out_dir``."""
    from adaptwin.io import atomic_write

    out_dir = Path(out_dir)
    for target, model in surrogate.models.items():
        atomic_write(out_dir / surrogate.metadata["targets"][target]["file"],
                     lambda p, m=model: m.save_model(str(p)))
    write_json(out_dir / "metadata.json", surrogate.metadata)
    return out_dir
