"""Figures of the surrogate stage (notebook 05): feature importances, predicted vs real, dataset coverage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.ticker import NullFormatter

from adaptwin.figures.style import (
    MARKER_OK,
    MARKER_STARVED,
    METHOD_COLORS,
    PAGE_WIDTH,
    figure,
    level_colors,
    save,
)

_LABELS = {
    "total_throughput": "total throughput (tok/s)",
    "itl_mean_ms": "mean ITL (ms)",
    "ttft_mean_ms": "mean TTFT (ms)",
    "starved": "starvation (classifier)",
}


def feature_importance(surrogate, directory: str | Path, name: str = "feature_importance") -> list[Path]:
    """CatBoost's PredictionValuesChange importance (% of the prediction change) per feature and target."""
    targets = list(surrogate.models)
    fig, axes = figure(ncols=len(targets), height=2.6, width=PAGE_WIDTH, sharey=True)
    names = list(surrogate.feature_names)
    for ax, target in zip(np.atleast_1d(axes), targets, strict=True):
        values = surrogate.models[target].get_feature_importance()
        ax.barh(range(len(names)), values, color=METHOD_COLORS["greedy"])
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_title(_LABELS.get(target, target))
        ax.set_xlabel("importance (%)")
    fig.suptitle(f"{surrogate.model}: feature importance", fontsize=8)
    return save(fig, directory, name)


def predicted_vs_actual(truth: pl.DataFrame, predicted: pl.DataFrame, directory: str | Path, name: str,
                        title: str, actual_label: str = "real") -> list[Path]:
    """Predicted against actual throughput, ITL and TTFT (log axes), hollow markers for starved rows."""
    fig, axes = figure(ncols=3, height=2.4)
    starved = truth["starved"].to_numpy().astype(bool)
    for ax, target in zip(axes, ("total_throughput", "itl_mean_ms", "ttft_mean_ms"), strict=True):
        a = truth[target].cast(pl.Float64).to_numpy()
        p = predicted[target].to_numpy()
        keep = np.isfinite(a) & (a > 0) & (p > 0)
        for mask, style, label in ((~starved, MARKER_OK, "not starved"), (starved, MARKER_STARVED, "starved")):
            m = keep & mask
            ax.plot(a[m], p[m], linestyle="none", color=METHOD_COLORS["twin"], label=label, **style)
        if keep.any():
            lo, hi = min(a[keep].min(), p[keep].min()), max(a[keep].max(), p[keep].max())
            ax.plot([lo, hi], [lo, hi], color="0.4", linewidth=0.8, linestyle="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of short log ranges overlap
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{actual_label} {_LABELS[target]}")
        ax.set_ylabel(f"predicted {_LABELS[target]}")
    axes[0].legend(loc="upper left")
    fig.suptitle(title, fontsize=8)
    return save(fig, directory, name)


def dataset_coverage(rows: pl.DataFrame, directory: str | Path, name: str = "dataset_coverage") -> list[Path]:
    """Where the twin rows lie (``total_throughput``, ``ideal_throughput``, ``sum_rate``, ``adapter_slots``):
    throughput / ideal against total rate coloured by A_max, and its histogram; starved below the 0.9 line."""
    fig, axes = figure(ncols=2, height=2.4)
    ratio = (rows["total_throughput"] / rows["ideal_throughput"]).to_numpy()
    sum_rate = rows["sum_rate"].to_numpy()
    slots = rows["adapter_slots"].to_numpy()
    points = axes[0].scatter(sum_rate, ratio, c=np.log2(slots), s=4, cmap="viridis")
    axes[0].axhline(0.9, color="0.3", linestyle="--", linewidth=0.8)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("total request rate (req/s)")
    axes[0].set_ylabel("throughput / ideal")
    fig.colorbar(points, ax=axes[0], label="log2 A_max")
    axes[1].hist(ratio[np.isfinite(ratio)], bins=40, color=METHOD_COLORS["greedy"])
    axes[1].axvline(0.9, color="0.3", linestyle="--", linewidth=0.8)
    axes[1].set_xlabel("throughput / ideal")
    axes[1].set_ylabel("scenarios")
    return save(fig, directory, name)


def error_breakdown(rows: pl.DataFrame, directory: str | Path, name: str = "breakdown") -> list[Path]:
    """Surrogate vs twin throughput SMAPE per A_max (left) and per offered load / capacity proxy (right), one
    line per evaluation set (`adaptwin.surrogate.evaluate.breakdown` rows: set, by, bin, n, throughput_smape_pct)."""
    fig, axes = figure(ncols=2, height=2.4)
    colors = level_colors(sorted(set(rows["set"].to_list())), "tab10")
    for ax, (by, xlabel) in zip(axes, (("a_max", "A_max (GPU adapter slots)"),
                                       ("load", "offered load / capacity proxy (bin)")), strict=True):
        part = rows.filter(pl.col("by") == by)
        bins = sorted(set(part["bin"].to_list()), key=lambda b: float(b.split("-")[0].rstrip("+")))
        for set_name in sorted(set(part["set"].to_list())):
            sub = part.filter(pl.col("set") == set_name)
            values = dict(zip(sub["bin"].to_list(), sub["throughput_smape_pct"].to_list(), strict=True))
            xs = [i for i, b in enumerate(bins) if b in values]
            ax.plot(xs, [values[bins[i]] for i in xs], marker="o", markersize=3, color=colors[set_name],
                    label=set_name)
        ax.set_xticks(range(len(bins)), bins, rotation=45, fontsize=6)
        ax.axhline(4.0, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("throughput SMAPE vs twin (%)")
    axes[0].legend(loc="upper left")
    fig.suptitle("surrogate vs twin: where the throughput error is (dashed: 4 % target)", fontsize=8)
    return save(fig, directory, name)


def model_figures(outcome: Any, out_dir: str | Path) -> None:
    """The figures of one model's surrogate stage (`adaptwin.surrogate.stage.ModelOutcome`): error breakdown,
    feature importance, dataset coverage, held-out and real-run predictions."""
    model, result, surrogate = outcome.model, outcome.result, outcome.result.surrogate
    fig_dir = Path(out_dir)
    if outcome.breakdown.height:
        error_breakdown(outcome.breakdown, fig_dir, f"breakdown_{model}")
    feature_importance(surrogate, fig_dir, f"feature_importance_{model}")
    dataset_coverage(result.data.frame, fig_dir, f"dataset_coverage_{model}")
    held = result.data.frame[result.test_idx]
    predicted_vs_actual(held, surrogate.predict(held), fig_dir, f"heldout_{model}",
                        f"{model}: CatBoost on held-out twin scenarios", actual_label="twin")
    runs = outcome.real_runs
    if runs is not None and runs.height:
        from adaptwin.surrogate.evaluate import real_set

        real = real_set(runs, surrogate.tokens_per_request)
        predicted_vs_actual(real.truth, surrogate.predict(real.features), fig_dir, f"real_runs_{model}",
                            f"{model}: CatBoost (trained on twin data only) vs real serving runs")
