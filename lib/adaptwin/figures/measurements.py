"""Figures 1 and 4-7: what the recorded vLLM measurements say about serving many LoRA adapters.

Every figure reads the tidy tables written by `adaptwin.measurements.ingest()` (never the raw files), so the
figures and the later stages see exactly the same numbers. Each figure has one ``fig*`` function taking polars
tables and an output directory and returning the written PNG + PDF paths; the numbers each figure draws come
from a small pure ``*_points`` function so tests can check them against values computed by hand.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from adaptwin.figures.style import (
    MARKER_MEMORY_ERROR,
    MARKER_OK,
    MARKER_STARVED,
    figure,
    level_colors,
    rank_color,
    save,
)
from adaptwin.rules import STARVATION_RATIO

# Family and sub-family names as written by the ingest (`runs.family`, `runs.subfamily`).
MOTIVATION_WITHOUT_SLOTS = "motivation_without_slots"
MOTIVATION_WITH_SLOTS = "motivation_with_slots"
MEMORY_OVERHEAD = "memory_overhead"
COMPUTE_OVERHEAD = "compute_overhead"
LOADING_LATENCY = "loading_overhead"

#: tokens per request of `dummy_dataset_mean.json` as the client counts them (250 in + 231 out)
MOTIVATION_TOKENS_PER_REQUEST = 250 + 231
#: a run is starved when its throughput is below this fraction of the offered load (the paper's rule)
#: the request sizes of the performance-analysis datasets, smallest first
REQUEST_SIZES = ("p25", "mean", "p75")
MODEL_LINESTYLES = {"llama-2-7b": "-", "llama-2-13b": ":"}


# ---------------------------------------------------------------------------------------------- data prep
def request_size(dataset: pl.Expr) -> pl.Expr:
    """``p25`` / ``mean`` / ``p75`` from the ``runs.dataset`` value (``dummy_p25``, ``dummy_mean``, ``dummy_p75``)."""
    return dataset.str.extract(r"(p25|mean|p75)", 1)


def per_adapter_rate() -> pl.Expr:
    """Request rate of one adapter (req/s) for both benchmark programs.

    The fixed-count benchmark records ``request_rate_by_lora``; the by-time benchmark records the list
    ``adapter_rates`` (one value in the motivation runs, so its mean is that value).
    """
    return pl.coalesce(pl.col("request_rate_by_lora"), pl.col("adapter_rates").list.mean())


def classify_outcome(
    runs: pl.DataFrame,
    tokens_per_request: float = MOTIVATION_TOKENS_PER_REQUEST,
    threshold: float = STARVATION_RATIO,
) -> pl.DataFrame:
    """Add ``rate``, ``ideal_throughput`` (tok/s) and ``outcome`` (ok / starved / memory_error / failed).

    Ideal = served adapters x per-adapter rate x tokens per request, the throughput the server would reach if
    it kept up with the offered load; below ``threshold`` x ideal some requests queue without bound (starvation).
    """
    ideal = pl.col("served_adapters") * pl.col("rate") * tokens_per_request
    outcome = (
        pl.when(pl.col("status") == "memory_error").then(pl.lit("memory_error"))
        .when(pl.col("status") != "ok").then(pl.lit("failed"))
        .when(pl.col("total_throughput") < threshold * pl.col("ideal_throughput")).then(pl.lit("starved"))
        .otherwise(pl.lit("ok"))
    )
    return (
        runs.with_columns(rate=per_adapter_rate())
        .with_columns(ideal_throughput=ideal)
        .with_columns(outcome=outcome)
    )


def motivation_points(runs: pl.DataFrame, a_max_rate: float = 0.0125) -> pl.DataFrame:
    """The points of Fig. 1: one row per run with ``panel``, ``series``, ``served``, ``throughput``, ``outcome``.

    Panels: ``rank`` (without_slots initial_point + varying_adapter_size, rate 0.05, adapter rank = S_max),
    ``rate`` (without_slots initial_point + varying_arrival_rate, rank 16) and ``a_max`` (with_slots at
    per-adapter rate ``a_max_rate``: one series per A_max, plus the runs without offloading, A_max = served).
    """
    flagged = classify_outcome(runs.filter(pl.col("family").is_in([MOTIVATION_WITHOUT_SLOTS, MOTIVATION_WITH_SLOTS])))
    without = flagged.filter(pl.col("family") == MOTIVATION_WITHOUT_SLOTS)
    with_slots = flagged.filter(pl.col("family") == MOTIVATION_WITH_SLOTS, (pl.col("rate") - a_max_rate).abs() < 1e-9)
    offloading = ~pl.col("subfamily").str.contains("without_offloading")
    panels = [
        without.filter(pl.col("subfamily").is_in(["initial_point", "varying_adapter_size"])).with_columns(
            panel=pl.lit("rank"), series=pl.col("max_lora_rank").cast(pl.Float64)),
        without.filter(pl.col("subfamily").is_in(["initial_point", "varying_arrival_rate"])).with_columns(
            panel=pl.lit("rate"), series=pl.col("rate")),
        with_slots.with_columns(
            panel=pl.lit("a_max"),
            series=pl.when(offloading).then(pl.col("max_loras").cast(pl.Float64)).otherwise(pl.lit(float("inf")))),
    ]
    columns = ["panel", "series", "served_adapters", "total_throughput", "ideal_throughput", "outcome", "run_id"]
    return (
        pl.concat([p.select(columns) for p in panels])
        .rename({"served_adapters": "served", "total_throughput": "throughput"})
        .sort("panel", "series", "served")
    )


def memory_overhead_points(runs: pl.DataFrame, size: str = "mean") -> pl.DataFrame:
    """The points of Fig. 4 for one request size: model, rank (S_max), A_max, batch size, throughput, ITL, status.

    The no-LoRA baseline (folder ``_``, no ``--enable-lora``) has a null rank and A_max.
    """
    return (
        runs.filter(pl.col("family") == MEMORY_OVERHEAD, request_size(pl.col("dataset")) == size)
        .select(
            "model", "status", "run_id",
            rank=pl.col("max_lora_rank"), a_max=pl.col("max_loras"),
            batch_size=pl.col("mean_running_in_window"), throughput=pl.col("total_throughput"),
            itl_ms=pl.col("itl_mean_ms"),
        )
        .sort("model", "rank", "a_max", nulls_last=True)
    )


def memory_limits(points: pl.DataFrame) -> pl.DataFrame:
    """Per model and rank of `memory_overhead_points`: the largest A_max that ran and the smallest out of memory."""
    return (
        points.filter(pl.col("rank").is_not_null())
        .group_by("model", "rank")
        .agg(
            last_ok=pl.col("a_max").filter(pl.col("status") == "ok").max(),
            first_memory_error=pl.col("a_max").filter(pl.col("status") == "memory_error").min(),
        )
        .filter(pl.col("first_memory_error").is_not_null())
        .sort("model", "rank")
    )


def compute_overhead_points(runs: pl.DataFrame) -> pl.DataFrame:
    """The points of Fig. 5: slowdown and ITL overhead (%) per request size, rank and adapters in the batch.

    Reference: the run of the same request size and server (A_max, S_max) with ``restrict_loras = 0`` (all
    requests to the base model). Slowdown = (1 - throughput / reference) x 100; ITL overhead =
    (ITL / reference - 1) x 100. Only successful runs.
    """
    ok = runs.filter(pl.col("family") == COMPUTE_OVERHEAD, pl.col("status") == "ok").with_columns(
        size=request_size(pl.col("dataset")))
    keys = ["size", "max_loras", "max_lora_rank"]
    reference = ok.filter(pl.col("restrict_loras") == 0).select(
        *keys, ref_throughput=pl.col("total_throughput"), ref_itl=pl.col("itl_mean_ms"))
    return (
        ok.join(reference, on=keys, how="inner")
        .select(
            "size", "run_id",
            rank=pl.col("max_lora_rank"), a_max=pl.col("max_loras"), adapters=pl.col("restrict_loras"),
            slowdown_pct=(1 - pl.col("total_throughput") / pl.col("ref_throughput")) * 100,
            itl_overhead_pct=(pl.col("itl_mean_ms") / pl.col("ref_itl") - 1) * 100,
        )
        .sort("size", "rank", "adapters")
    )


def loading_time_points(lora_load_times: pl.DataFrame) -> pl.DataFrame:
    """Per rank and load kind (first / next): mean, min and max disk-to-CPU and CPU-to-GPU times in ms."""
    return (
        lora_load_times.group_by("adapter_rank", "load")
        .agg(
            loading_ms=pl.col("loading_time_s").mean() * 1000,
            activating_ms=pl.col("activating_time_s").mean() * 1000,
            total_min_ms=(pl.col("loading_time_s") + pl.col("activating_time_s")).min() * 1000,
            total_max_ms=(pl.col("loading_time_s") + pl.col("activating_time_s")).max() * 1000,
            n=pl.len(),
        )
        .sort("adapter_rank", "load")
    )


def served_requests(timeseries: pl.DataFrame) -> pl.DataFrame:
    """Per run, the largest value of the server's ``finished`` counter: requests the polled server finished."""
    return timeseries.group_by("run_id").agg(server_finished=pl.col("finished").max())


def loading_latency_runs(runs: pl.DataFrame, timeseries: pl.DataFrame) -> pl.DataFrame:
    """The loading-latency repetitions used by Fig. 6, with a ``clean`` flag and the mean request latency (ms).

    Data-card caveat: the five repetitions of a configuration shared one port, so some benchmarks measured a
    sibling's server while another benchmark ran on it. A repetition is *clean* when the polled server finished
    no more than this benchmark's requests plus the one warm-up. Clean repetitions are kept; a configuration
    without any keeps only its fastest repetition (interference only adds time), flagged ``clean = False``.
    Request latency = mean TTFT + mean TPOT x (output tokens per request - 1).
    """
    latency = runs.filter(pl.col("family") == LOADING_LATENCY, pl.col("status") == "ok").join(
        served_requests(timeseries), on="run_id", how="left")
    latency = latency.with_columns(
        size=request_size(pl.col("dataset")),
        rank=pl.col("max_lora_rank"),
        clean=pl.col("server_finished") <= pl.col("num_prompts") + 1,
        latency_ms=pl.col("ttft_mean_ms")
        + pl.col("tpot_mean_ms") * (pl.col("total_output_tokens") / pl.col("successful_requests") - 1),
    )
    keys = ["size", "rank"]
    any_clean = pl.col("clean").any().over(keys)
    fastest = pl.col("duration_s") == pl.col("duration_s").min().over(keys)
    return (
        latency.filter(pl.col("clean") | (~any_clean & fastest))
        .select(*keys, "run_id", "clean", "duration_s", "latency_ms")
        .sort(*keys, "run_id")
    )


def loading_latency_points(runs: pl.DataFrame, timeseries: pl.DataFrame, lora_load_times: pl.DataFrame) -> pl.DataFrame:
    """Per request size and rank: request latency (ms) when the adapter comes from CPU memory or from disk.

    From CPU adds the mean CPU-to-GPU activation time; from disk adds the first load's disk-to-CPU time plus
    activation (the load times come from `lora_load_times`, the latency from the clean repetitions).
    """
    loads = loading_time_points(lora_load_times).filter(pl.col("load") == "first").select(
        rank=pl.col("adapter_rank"), disk_ms=pl.col("loading_ms") + pl.col("activating_ms"),
        cpu_ms=pl.col("activating_ms"))
    base = loading_latency_runs(runs, timeseries).group_by("size", "rank").agg(
        latency_ms=pl.col("latency_ms").median(), clean=pl.col("clean").all(), repetitions=pl.len())
    return (
        base.join(loads, on="rank", how="inner")
        .with_columns(
            from_cpu_ms=pl.col("latency_ms") + pl.col("cpu_ms"),
            from_disk_ms=pl.col("latency_ms") + pl.col("disk_ms"),
        )
        .with_columns(
            cpu_overhead_pct=pl.col("cpu_ms") / pl.col("latency_ms") * 100,
            disk_overhead_pct=pl.col("disk_ms") / pl.col("latency_ms") * 100,
        )
        .sort(pl.col("size").replace_strict(REQUEST_SIZES, range(3)), "rank")
    )


def scheduler_points(scheduler_overhead: pl.DataFrame) -> pl.DataFrame:
    """The scheduler CSV rows with ``sched_ms_per_step``: the ingest's time per step (the authors' target), in ms."""
    return scheduler_overhead.with_columns(sched_ms_per_step=pl.col("scheduling_time_per_step_s") * 1000)


# ------------------------------------------------------------------------------------------------- figures
def _plot_outcomes(ax, points: pl.DataFrame, color, label: str) -> None:
    """One series of Fig. 1: a line through the measured runs, marker fill by starvation, x for memory errors."""
    measured = points.filter(pl.col("outcome").is_in(["ok", "starved"]))
    ax.plot(measured["served"], measured["throughput"], color=color, label=label, marker="none")
    for outcome, style in (("ok", MARKER_OK), ("starved", MARKER_STARVED)):
        sub = measured.filter(pl.col("outcome") == outcome)
        ax.plot(sub["served"], sub["throughput"], linestyle="none", color=color, **style)
    errors = points.filter(pl.col("outcome") == "memory_error")
    if errors.is_empty():  # an empty unclipped line breaks constrained layout
        return
    ax.plot(errors["served"], np.zeros(errors.height), linestyle="none", color=color, clip_on=False,
            transform=ax.get_xaxis_transform(), **MARKER_MEMORY_ERROR)


def fig1_motivation(runs: pl.DataFrame, out_dir: str | Path, a_max_rate: float = 0.0125) -> list[Path]:
    """Fig. 1: total throughput vs served adapters when varying rank, per-adapter rate, and A_max (Llama-2-7B)."""
    points = motivation_points(runs, a_max_rate)
    fig, axes = figure(ncols=3, height=2.6)
    titles = {
        "rank": "(a) rank; 0.05 req/s per adapter",
        "rate": "(b) rate per adapter; rank 16",
        "a_max": f"(c) A_max; rank 16, {a_max_rate:g} req/s",
    }
    for ax, panel in zip(axes, titles, strict=True):
        sub = points.filter(pl.col("panel") == panel)
        levels = sorted(sub["series"].unique().to_list())
        colors = _series_colors(panel, levels)
        for s in levels:
            _plot_outcomes(ax, sub.filter(pl.col("series") == s), colors[s], _series_label(panel, s))
        ax.set(title=titles[panel], xlabel="served adapters", ylabel="throughput, in + out (tok/s)", ylim=(0, None))
        ax.legend(title=_series_title(panel), loc="lower right", frameon=False, ncols=2 if len(levels) > 5 else 1,
                  fontsize=6, title_fontsize=6)
    _outcome_legend_figure(fig)
    return save(fig, out_dir, "fig1_throughput_vs_adapters")


def _outcome_legend_figure(fig) -> None:
    """Place the marker key once, above the panels."""
    handles = [
        plt.Line2D([], [], color="0.3", linestyle="none", **MARKER_OK, label="no starvation"),
        plt.Line2D([], [], color="0.3", linestyle="none", **MARKER_STARVED, label="starvation (throughput < 0.9 x ideal)"),
        plt.Line2D([], [], color="0.3", linestyle="none", **MARKER_MEMORY_ERROR, label="memory error (drawn at 0)"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=3, frameon=False)


def _series_colors(panel: str, levels: list[float]) -> dict:
    """Rank colours for ranks, an ordered palette for rates and A_max; black for 'A_max = served'."""
    if panel == "rank":
        return {s: rank_color(int(s)) for s in levels}
    finite = [s for s in levels if np.isfinite(s)]
    return {**level_colors(finite), **{s: (0.0, 0.0, 0.0) for s in levels if not np.isfinite(s)}}


def _series_label(panel: str, value: float) -> str:
    """Legend entry of one Fig. 1 series."""
    if panel == "rate":
        return f"{value:g}"
    if panel == "a_max" and np.isinf(value):
        return "= served"
    return f"{int(value)}"


def _series_title(panel: str) -> str:
    return {"rank": "rank", "rate": "req/s per adapter", "a_max": "A_max"}[panel]


def fig4_memory_overhead(runs: pl.DataFrame, out_dir: str | Path, size: str = "mean") -> list[Path]:
    """Fig. 4: batch size and throughput vs A_max, ITL vs batch size; 7B solid, 13B dotted, colour per rank."""
    points = memory_overhead_points(runs, size)
    fig, (ax_batch, ax_thr, ax_itl) = figure(ncols=3, height=2.4)
    lora = points.filter(pl.col("rank").is_not_null())
    for (model, rank), sub in lora.group_by("model", "rank", maintain_order=True):
        style = dict(color=rank_color(rank), linestyle=MODEL_LINESTYLES.get(model, "--"), marker="o", markersize=2.5)
        ok = sub.filter(pl.col("status") == "ok").sort("a_max")
        ax_batch.plot(ok["a_max"], ok["batch_size"], **style)
        ax_thr.plot(ok["a_max"], ok["throughput"], **style)
        by_batch = ok.sort("batch_size")
        ax_itl.plot(by_batch["batch_size"], by_batch["itl_ms"], **{**style, "linewidth": 0.8})
    for limit in memory_limits(points).iter_rows(named=True):
        _mark_memory_limit((ax_batch, ax_thr), limit)
    _draw_baseline(points, ax_batch, ax_thr)
    ax_batch.set(xscale="log", xlabel="adapter slots A_max", ylabel="mean batch size (requests)", ylim=(0, None),
                 title="(a) batch size")
    ax_thr.set(xscale="log", xlabel="adapter slots A_max", ylabel="throughput, in + out (tok/s)", ylim=(0, None),
               title="(b) throughput")
    ax_itl.set(xlabel="mean batch size (requests)", ylabel="mean ITL (ms)", title="(c) ITL vs batch size")
    models = [m for m in MODEL_LINESTYLES if m in set(lora["model"].to_list())]
    _memory_legend(fig, sorted(lora["rank"].unique().to_list()), models)
    return save(fig, out_dir, f"fig4_memory_overhead_{size}")


def _mark_memory_limit(axes, limit: dict) -> None:
    """Mark the first A_max out of memory on the x axis: x for 7B at the axis, + for 13B just above it."""
    big = MODEL_LINESTYLES.get(limit["model"]) != "-"
    for ax in axes:
        ax.plot([limit["first_memory_error"]], [0.07 if big else 0.0], marker="+" if big else "x", markersize=7,
                markeredgewidth=1.5, color=rank_color(limit["rank"]), linestyle="none", clip_on=False, zorder=5,
                transform=ax.get_xaxis_transform())


def _draw_baseline(points: pl.DataFrame, ax_batch, ax_thr) -> None:
    """The no-LoRA server (Llama-2-7B only) as a grey horizontal reference line."""
    base = points.filter(pl.col("rank").is_null(), pl.col("status") == "ok")
    for row in base.iter_rows(named=True):
        ax_batch.axhline(row["batch_size"], color="0.5", linewidth=0.8, linestyle="--")
        ax_thr.axhline(row["throughput"], color="0.5", linewidth=0.8, linestyle="--")


def _memory_legend(fig, ranks: list[int], models: list[str]) -> None:
    """Legend of Fig. 4: colour = rank, line style = model, x / + = first A_max that runs out of memory."""
    handles = [plt.Line2D([], [], color=rank_color(r), label=f"rank {r}") for r in ranks]
    handles += [plt.Line2D([], [], color="0.3", linestyle=MODEL_LINESTYLES.get(m, "--"), label=m) for m in models]
    handles += [
        plt.Line2D([], [], color="0.5", linestyle="--", linewidth=0.8, label="no LoRA (7B)"),
        plt.Line2D([], [], color="0.3", marker="x", linestyle="none", label="first A_max out of memory (7B)"),
        plt.Line2D([], [], color="0.3", marker="+", linestyle="none", label="first A_max out of memory (13B)"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=4, frameon=False)


def fig5_compute_overhead(runs: pl.DataFrame, out_dir: str | Path) -> list[Path]:
    """Fig. 5: throughput slowdown and ITL overhead (%) vs adapters in the batch, per request size and rank."""
    points = compute_overhead_points(runs)
    sizes = [s for s in REQUEST_SIZES if s in set(points["size"].to_list())]
    fig, axes = figure(ncols=len(sizes), nrows=2, height=1.9, squeeze=False, sharex="col")
    for col, size in enumerate(sizes):
        for (rank, max_loras), sub in points.filter(pl.col("size") == size).group_by("rank", "a_max", maintain_order=True):
            style = dict(color=rank_color(rank), marker="o", markersize=2.5, label=f"rank {rank} (A_max {max_loras})")
            axes[0, col].plot(sub["adapters"], sub["slowdown_pct"], **style)
            axes[1, col].plot(sub["adapters"], sub["itl_overhead_pct"], **style)
        axes[0, col].set(title=f"{size} requests", ylabel="throughput slowdown (%)" if col == 0 else None)
        axes[1, col].set(xlabel="adapters in the batch", ylabel="ITL overhead (%)" if col == 0 else None)
        axes[0, col].legend(frameon=False, fontsize=6)
        for ax in axes[:, col]:
            ax.set_xscale("symlog", linthresh=1)
            ax.axhline(0, color="0.5", linewidth=0.6)
    return save(fig, out_dir, "fig5_compute_overhead")


def fig6_loading_overhead(
    runs: pl.DataFrame, timeseries: pl.DataFrame, lora_load_times: pl.DataFrame, out_dir: str | Path
) -> list[Path]:
    """Fig. 6: adapter loading time by rank (first vs later loads) and request latency from disk vs from CPU."""
    times = loading_time_points(lora_load_times)
    latency = loading_latency_points(runs, timeseries, lora_load_times)
    fig, (ax_load, ax_lat, ax_pct) = figure(ncols=3, height=2.4)
    _draw_load_times(ax_load, times)
    _draw_latency(ax_lat, ax_pct, latency)
    return save(fig, out_dir, "fig6_loading_overhead")


def _draw_load_times(ax, times: pl.DataFrame) -> None:
    """Stacked bars per rank: disk-to-CPU (solid) and CPU-to-GPU (light) time, first and later loads."""
    ranks = sorted(times["adapter_rank"].unique().to_list())
    width = 0.38
    for offset, load, hatch in ((-width / 2, "first", None), (width / 2, "next", "//")):
        sub = times.filter(pl.col("load") == load).sort("adapter_rank")
        x = np.arange(len(ranks)) + offset
        colors = [rank_color(r) for r in sub["adapter_rank"]]
        ax.bar(x, sub["loading_ms"], width, color=colors, hatch=hatch, edgecolor="white", linewidth=0)
        ax.bar(x, sub["activating_ms"], width, bottom=sub["loading_ms"], color=colors, alpha=0.4, hatch=hatch,
               edgecolor="white", linewidth=0)
        total = (sub["loading_ms"] + sub["activating_ms"]).to_numpy()
        spread = [total - sub["total_min_ms"].to_numpy(), sub["total_max_ms"].to_numpy() - total]
        ax.errorbar(x, total, yerr=np.clip(spread, 0, None),
                    fmt="none", ecolor="0.2", elinewidth=0.8, capsize=2)
    ax.set_xticks(np.arange(len(ranks)), [str(r) for r in ranks])
    ax.set(xlabel="adapter rank", ylabel="load time (ms)", title="(a) adapter load time")
    ax.legend(handles=[
        plt.Rectangle((0, 0), 1, 1, color="0.4", label="first load"),
        plt.Rectangle((0, 0), 1, 1, facecolor="0.4", hatch="//", edgecolor="white", label="later loads (mean)"),
        plt.Rectangle((0, 0), 1, 1, color="0.4", alpha=0.4, label="CPU-to-GPU part"),
    ], frameon=False, loc="upper left")


def _draw_latency(ax_lat, ax_pct, latency: pl.DataFrame) -> None:
    """Grouped bars per request size and rank: latency from CPU / from disk (ms), and the added latency (%)."""
    sizes = [s for s in REQUEST_SIZES if s in set(latency["size"].to_list())]
    ranks = sorted(latency["rank"].unique().to_list())
    width = 0.8 / (2 * len(ranks))
    for i, rank in enumerate(ranks):
        sub = latency.filter(pl.col("rank") == rank)
        sub = sub.sort(pl.col("size").replace_strict(sizes, range(len(sizes))))
        hatch = ["" if clean else "xx" for clean in sub["clean"]]
        for j, (source, alpha) in enumerate((("cpu", 0.45), ("disk", 1.0))):
            x = np.arange(len(sizes)) - 0.4 + width * (2 * i + j + 0.5)
            ax_lat.bar(x, sub[f"from_{source}_ms"] / 1000, width, color=rank_color(rank), alpha=alpha, hatch=hatch)
            ax_pct.bar(x, sub[f"{source}_overhead_pct"], width, color=rank_color(rank), alpha=alpha, hatch=hatch)
    for ax in (ax_lat, ax_pct):
        ax.set_xticks(np.arange(len(sizes)), sizes)
        ax.set_xlabel("request size (dataset percentile)")
    ax_lat.set(yscale="log", ylabel="mean request latency (s)", title="(b) latency, adapter from CPU / disk")
    ax_pct.set(ylabel="latency added by loading (%)", title="(c) loading share of latency")
    handles = [plt.Rectangle((0, 0), 1, 1, color=rank_color(r), label=f"rank {r}") for r in ranks]
    handles += [
        plt.Rectangle((0, 0), 1, 1, color="0.4", alpha=0.45, label="(b, c) adapter in CPU memory"),
        plt.Rectangle((0, 0), 1, 1, color="0.4", label="(b, c) adapter from disk"),
        plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="0.3", hatch="xx",
                      label="no clean repetition: fastest used"),
    ]
    ax_lat.figure.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)


def fig7_scheduler_overhead(
    scheduler_overhead: pl.DataFrame, out_dir: str | Path, adapter_rate: float = 0.1, total_rate: float = 50.0
) -> list[Path]:
    """Fig. 7: scheduler time per step vs served adapters (equal per-adapter rate; equal total rate) and vs queue."""
    points = scheduler_points(scheduler_overhead)
    levels = sorted(points["gpu_loras"].unique().to_list())
    colors = level_colors(levels)
    fig, axes = figure(ncols=3, height=2.4)
    panels = (
        ("adapter_rates", adapter_rate, f"(a) {adapter_rate:g} req/s per adapter"),
        ("aggregated_rate", total_rate, f"(b) {total_rate:g} req/s in total"),
    )
    for ax, (source, rate, title) in zip(axes[:2], panels, strict=True):
        sub = points.filter(pl.col("source") == source, (pl.col("rate") - rate).abs() < 1e-9)
        for (max_loras,), group in sub.group_by("gpu_loras", maintain_order=True):
            group = group.sort("cpu_loras")
            ax.plot(group["cpu_loras"], group["sched_ms_per_step"], color=colors[max_loras], marker="o", markersize=2.5)
        ax.set(xscale="log", xlabel="served adapters", ylabel="scheduler time per step (ms)", title=title,
               ylim=(0, None))
    ax = axes[2]
    ax.scatter(points["avg_waiting_queue"], points["sched_ms_per_step"], s=5,
               c=[colors[a] for a in points["gpu_loras"]], linewidths=0)
    ax.set(xscale="symlog", xlabel="mean waiting queue (requests)", ylabel="scheduler time per step (ms)",
           title="(c) all runs, both tables", ylim=(0, None))
    _a_max_colorbar(fig, axes, levels)
    return save(fig, out_dir, "fig7_scheduler_overhead")


def _a_max_colorbar(fig, axes, levels: list[int]) -> None:
    """One discrete colour bar for A_max shared by the panels of Fig. 7."""
    colors = level_colors(levels)
    cmap = mcolors.ListedColormap([colors[level] for level in levels])
    norm = mcolors.BoundaryNorm(np.arange(len(levels) + 1), cmap.N)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, pad=0.01, aspect=30)
    bar.set_ticks(np.arange(len(levels)) + 0.5, labels=[str(level) for level in levels])
    bar.set_label("A_max (GPU adapter slots)")


# ------------------------------------------------------------------------------- which figures can be drawn
#: What each figure reads: table -> the ``runs.family`` values it needs (any one of them), or None (any row).
FIGURE_INPUTS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "fig1": {"runs": (MOTIVATION_WITHOUT_SLOTS, MOTIVATION_WITH_SLOTS)},
    "fig4": {"runs": (MEMORY_OVERHEAD,)},
    "fig5": {"runs": (COMPUTE_OVERHEAD,)},
    "fig6": {"runs": (LOADING_LATENCY,), "timeseries": None, "lora_load_times": None},
    "fig7": {"scheduler_overhead": None},
}
FIGURE_TITLES = {
    "fig1": "Fig. 1 (throughput vs served adapters)",
    "fig4": "Fig. 4 (memory overhead)",
    "fig5": "Fig. 5 (compute overhead)",
    "fig6": "Fig. 6 (loading overhead)",
    "fig7": "Fig. 7 (scheduler overhead)",
}


def available_tables(directory: str | Path, tables: tuple[str, ...] | None = None) -> list[str]:
    """The measurement tables (of ``tables``, default all documented) with a ``<directory>/<table>.parquet``.

    A replay ingest writes every table; a ``vllm`` profiling run writes only ``runs``, ``timeseries`` and
    ``kv_capacity`` (the other tables come from corpus families a profile does not run).
    """
    from adaptwin.measurements import schema

    names = tuple(schema.TABLES) if tables is None else tables
    return [name for name in names if (Path(directory) / f"{name}.parquet").exists()]


def missing_inputs(figure: str, tables: dict[str, pl.DataFrame]) -> list[str]:
    """What ``figure`` (a key of ``FIGURE_INPUTS``) needs and ``tables`` (name -> frame) does not have."""
    missing = []
    for table, families in FIGURE_INPUTS[figure].items():
        frame = tables.get(table)
        if frame is None:
            missing.append(f"there is no {table} table")
        elif families is None and frame.is_empty():
            missing.append(f"the {table} table is empty")
        elif families is not None and not frame.filter(pl.col("family").is_in(list(families))).height:
            missing.append(f"{table} has no run of family {' or '.join(families)}")
    return missing


def skip_reason(figure: str, tables: dict[str, pl.DataFrame]) -> str | None:
    """None when ``figure`` can be drawn from ``tables``; otherwise one sentence saying why it is skipped."""
    missing = missing_inputs(figure, tables)
    return f"{FIGURE_TITLES[figure]} not drawn: {'; '.join(missing)}." if missing else None
