"""Uncertainty sampling: simulate more GPUs where the surrogate is least sure, then train again.

Why: placement packs GPUs up to the edge of starvation, so most of the questions it asks sit near the
boundary, where a surrogate trained on a design spread over all loads is weakest (its classifier's verdicts
on the GPU groups placement builds were barely better than a coin in the default profile). Random draws put
few rows there; a round of this module draws a large pool of placement-shaped candidates
(`adaptwin.dataset.mixes`, training popularity laws, a seed stream of their own per round), scores each
with the current surrogate, keeps the ``n`` it is least sure about, has the twin label them and retrains on
everything. Scoring costs microseconds per candidate; only the kept ones cost twin time.

Uncertainty of a candidate = p (1 - p), p the starvation classifier's probability (largest at p = 0.5: on
the boundary), plus the same for the throughput regressor read as a verdict: q = the predicted share of the
ideal throughput mapped through a logistic around the 0.9 starvation line (`rules.STARVATION_RATIO`), so a
candidate on which the regressor and classifier disagree about the verdict scores high too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adaptwin.rules import STARVATION_RATIO
from adaptwin.surrogate.features import PAPER_FEATURES, gpu_features

#: width of the logistic that reads the regressor's throughput share as a verdict (share units): a GPU served
#: in full (share 1.0) scores 0.007, one at 0.88 or 0.92 scores 0.25 +- 0.02
SHARE_WIDTH = 0.02


def scenario_features(scenarios: list[dict[str, Any]], calibration: Any = None) -> pl.DataFrame:
    """The paper's seven features of every scenario (its adapter groups and A_max)."""
    rows = []
    for sc in scenarios:
        groups = sc["adapters"]
        rows.append(gpu_features([g["rank"] for g in groups], [g["rate"] for g in groups],
                                 int(sc["server"]["max_loras"]), counts=[g["count"] for g in groups],
                                 calibration=calibration))
    return pl.DataFrame(rows).select(PAPER_FEATURES)


def uncertainty(surrogate: Any, features: pl.DataFrame) -> np.ndarray:
    """How unsure ``surrogate`` is of each row's starvation verdict (0 = sure, 0.5 = both models on the edge)."""
    out = surrogate.predict(features)
    p = out["starvation_probability"].to_numpy()
    ideal = features["sum_rate"].to_numpy() * surrogate.tokens_per_request
    share = out["total_throughput"].to_numpy() / np.maximum(ideal, 1e-9)
    q = 1.0 / (1.0 + np.exp((share - STARVATION_RATIO) / SHARE_WIDTH))  # probability-like: low share = starved
    return p * (1 - p) + q * (1 - q)


def pick_uncertain(surrogate: Any, candidates: list[dict[str, Any]], n: int) -> tuple[list[dict[str, Any]], dict]:
    """The ``n`` candidates ``surrogate`` is least sure about (ties keep draw order), and a record of the pick
    (mean uncertainty of the pool and of the picked)."""
    if n <= 0 or not candidates:
        return [], {"pool": len(candidates), "picked": 0}
    score = uncertainty(surrogate, scenario_features(candidates, surrogate.calibration))
    order = np.argsort(-score, kind="stable")[:n]
    picked = [candidates[i] for i in sorted(order)]
    return picked, {"pool": len(candidates), "picked": len(picked), "pool_mean_uncertainty": float(score.mean()),
                    "picked_mean_uncertainty": float(score[order].mean())}


def active_round(surrogate: Any, n: int, pool: int, window_s: float, seed: int, out_dir: str | Path,
                 laws: tuple[str, ...] | None = None) -> tuple[pl.DataFrame, dict]:
    """One round: draw ``pool`` x ``n`` placement-shaped candidates at ``window_s`` (seed stream ``seed``), keep
    the ``n`` most uncertain, sweep them into ``out_dir`` (resumable; serial) and return the new rows and the
    pick's record."""
    from adaptwin.dataset.mixes import TRAIN_LAWS, mix_scenarios
    from adaptwin.dataset.sampler import SamplerConfig
    from adaptwin.sweep import load_dataset, run_sweep

    config = SamplerConfig(surrogate.model, duration_s=window_s)
    candidates = mix_scenarios(config, pool * n, seed=seed, laws=laws or TRAIN_LAWS,
                               calibration=surrogate.calibration)
    picked, record = pick_uncertain(surrogate, candidates, n)
    report = run_sweep(picked, out_dir, calibration=surrogate.calibration, engine="serial",
                       chunk_size=max(len(picked), 1), progress=False)
    record.update(seed=seed, window_s=window_s, simulated=report.evaluated, wall_time_s=round(report.wall_time_s, 3))
    return load_dataset(out_dir), record
