"""Figures of the placement stage (notebook 06), shaped like the paper's Fig. 10, 11 and 12 and Table 6.

All throughput and ITL values plotted are the twin's (every GPU re-simulated), not the surrogate's, so the
figures show what the placements deliver; hollow markers flag placements with a starved GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from adaptwin.figures.style import MARKER_OK, MARKER_STARVED, METHOD_COLORS, figure, save


def _method_lines(ax, frame: pl.DataFrame, x: str, y: str, starved: str | None = None) -> None:
    """One line per method of ``y`` against ``x``; points with ``starved`` > 0 drawn hollow."""
    for method in frame["method"].unique(maintain_order=True).to_list():
        part = frame.filter(pl.col("method") == method).sort(x)
        xs, ys = part[x].to_numpy(), part[y].to_numpy().astype(float)
        color = METHOD_COLORS.get(method)
        ax.plot(xs, ys, color=color, label=method, marker="")
        bad = part[starved].to_numpy().astype(float) > 0 if starved else np.zeros(len(xs), bool)
        ax.plot(xs[~bad], ys[~bad], linestyle="none", color=color, **MARKER_OK)
        ax.plot(xs[bad], ys[bad], linestyle="none", color=color, **MARKER_STARVED)


def single_gpu(frame: pl.DataFrame, directory: str | Path, name: str = "fig10_single_gpu") -> list[Path]:
    """Fig. 10: one GPU serving N adapters: twin throughput and the A_max each method picks, against N."""
    fig, (left, right) = figure(ncols=2, height=2.4)
    data = frame.with_columns(pl.col("starved").cast(pl.Int64))
    _method_lines(left, data, "adapters", "total_throughput", "starved")
    left.set_xlabel("adapters to serve")
    left.set_ylabel("twin throughput (tok/s)")
    _method_lines(right, data, "adapters", "max_loras")
    right.set_xlabel("adapters to serve")
    right.set_ylabel("chosen A_max (slots)")
    left.legend(loc="best")
    fig.suptitle("One GPU: throughput (hollow: starved) and chosen A_max", fontsize=8)
    return save(fig, directory, name)


def gpus_and_itl(summary: pl.DataFrame, directory: str | Path, kind: str = "azure",
                 name: str = "fig11_gpus_itl") -> list[Path]:
    """Fig. 11: GPUs used and twin ITL against adapters, one row per arrival multiplier, lower bound dashed."""
    data = summary.filter(pl.col("kind") == kind)
    mix = data["rank_mix"].unique(maintain_order=True).to_list()[:1]
    data = data.filter(pl.col("rank_mix").is_in(mix))
    multipliers = sorted(data["multiplier"].unique().to_list())
    fig, axes = figure(ncols=2, nrows=max(1, len(multipliers)), height=2.2, squeeze=False)
    for row, m in zip(axes, multipliers, strict=False):
        part = data.filter(pl.col("multiplier") == m)
        _method_lines(row[0], part, "adapters", "gpus_used", "starved_gpus")
        bound = part.group_by("adapters").agg(pl.col("lower_bound_gpus").first()).sort("adapters")
        row[0].plot(bound["adapters"], bound["lower_bound_gpus"], color=METHOD_COLORS["lower-bound"],
                    linestyle="--", label="lower bound")
        row[0].set_ylabel(f"GPUs used (x{m:g} arrivals)")
        _method_lines(row[1], part, "adapters", "itl_mean_ms", "starved_gpus")
        row[1].set_ylabel(f"twin mean ITL (ms), x{m:g}")
        for ax in row:
            ax.set_xlabel("adapters")
            ax.set_xscale("log")
    axes[0][0].legend(loc="best", ncol=2)
    fig.suptitle(f"{kind} workloads, ranks {mix[0] if mix else ''}: GPUs and ITL (hollow: starved GPUs)", fontsize=8)
    return save(fig, directory, name)


def latency_variant(summary: pl.DataFrame, directory: str | Path, name: str = "fig12_latency") -> list[Path]:
    """Fig. 12: twin ITL of the proposed greedy and its latency variant (same GPU count) against adapters."""
    data = summary.filter(pl.col("method").is_in(["greedy", "greedy-latency"]))
    data = data.group_by("method", "adapters", "multiplier", maintain_order=True).agg(
        pl.col("itl_mean_ms").mean(), pl.col("starved_gpus").sum())
    multipliers = sorted(data["multiplier"].unique().to_list())
    fig, axes = figure(ncols=max(1, len(multipliers)), height=2.4, squeeze=False)
    for ax, m in zip(axes[0], multipliers, strict=False):
        _method_lines(ax, data.filter(pl.col("multiplier") == m), "adapters", "itl_mean_ms", "starved_gpus")
        ax.set_xlabel("adapters")
        ax.set_ylabel(f"twin mean ITL (ms), x{m:g}")
        ax.set_xscale("log")
    axes[0][0].legend(loc="best")
    fig.suptitle("Latency variant: same GPUs, lower ITL (mean over workload kinds)", fontsize=8)
    return save(fig, directory, name)


def placement_times(times: pl.DataFrame, directory: str | Path, name: str = "table6_placement_time") -> list[Path]:
    """Table 6 as a bar chart: mean placement time per method (log scale)."""
    fig, ax = figure(ncols=1, height=2.2, width=3.5)
    methods = times["method"].to_list()
    ax.bar(range(len(methods)), times["mean_s"].to_numpy() * 1000,
           color=[METHOD_COLORS.get(m, "0.5") for m in methods])
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("mean placement time (ms)")
    return save(fig, directory, name)
