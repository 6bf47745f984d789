"""Figures of the twin: calibration residuals (one per cost model), real vs twin (paper's Fig. 8 and Fig. 9).

Each function takes tidy frames (from `adaptwin.calibration` / `adaptwin.validation.runs`), draws with
`adaptwin.figures.style.figure` and writes PNG + PDF with `save`; it returns the written paths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from adaptwin.calibration.fits import interp_extrap
from adaptwin.calibration.models import Fitted
from adaptwin.figures.style import COLUMN_WIDTH, METHOD_COLORS, figure, level_colors, save


def _residual_panel(ax, measured: np.ndarray, predicted: np.ndarray, x: np.ndarray, xlabel: str,
                    groups: np.ndarray | None = None) -> None:
    """Relative residual (predicted / measured - 1, %) against ``x``, one colour per group."""
    resid = (predicted / measured - 1.0) * 100.0
    labels = np.unique(groups) if groups is not None else [None]
    for g in labels:
        m = np.ones_like(resid, bool) if g is None else groups == g
        ax.plot(x[m], resid[m], "o", label=None if g is None else str(g))
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("residual (%)")
    if groups is not None:
        ax.legend(frameon=False)


def step_residuals(fit: Fitted, model: str, out_dir: str | Path) -> list[Path]:
    """Step-time model: measured vs predicted per-step time, and relative residuals vs batch size."""
    p = fit.points
    fig, (a, b) = figure(ncols=2)
    for kind, g in p.group_by("kind", maintain_order=True):
        a.plot(g["measured_ms"], g["predicted_ms"], "o", label=f"{kind[0]} runs")
    lim = [0, float(max(p["measured_ms"].max(), p["predicted_ms"].max())) * 1.05]
    a.plot(lim, lim, "k-", lw=0.8)
    a.set_xlabel("measured step time (ms)")
    a.set_ylabel("fitted step time (ms)")
    a.set_title(f"{model}: step time (ITL / prefill step)")
    a.legend(frameon=False)
    d = p.filter(pl.col("kind") == "decode")
    _residual_panel(b, d["measured_ms"].to_numpy(), d["predicted_ms"].to_numpy(), d["mean_running"].to_numpy(),
                    "mean running batch (requests)", d["output_tokens"].round(0).cast(pl.Int64).to_numpy())
    b.set_title("decode runs, by output length (tokens)")
    return save(fig, out_dir, f"{model}_step_residuals")


def lora_residuals(fit: Fitted, model: str, out_dir: str | Path) -> list[Path]:
    """LoRA cost: time LoRA adds to a step (measured = ITL - fitted no-LoRA step) vs expected distinct adapters,
    with the fitted value, and the ITL residuals of every LoRA profiling run."""
    p = fit.points.filter(pl.col("kind") != "base").with_columns(
        (pl.col("lora_extra_ms") + pl.col("measured_ms") - pl.col("predicted_ms")).alias("measured_extra_ms"))
    fig, (a, b) = figure(ncols=2)
    for kind, g in p.group_by("kind", maintain_order=True):
        line = a.plot(g["distinct_adapters"], g["measured_extra_ms"], "o", label=f"{kind[0]} (measured)")
        a.plot(g["distinct_adapters"], g["lora_extra_ms"], "_", ms=10, color=line[0].get_color())
    a.set_xlabel("distinct adapters per batch (table: measured; runs: expected)")
    a.set_ylabel("LoRA time per step (ms)")
    a.set_title(f"{model}: LoRA overhead ({fit.quality['form']}; bars = fit)")
    a.legend(frameon=False)
    _residual_panel(b, p["measured_ms"].to_numpy(), p["predicted_ms"].to_numpy(),
                    p["distinct_adapters"].to_numpy(), "expected distinct adapters per batch",
                    p["kind"].to_numpy())
    b.set_title("ITL residual of LoRA runs")
    return save(fig, out_dir, f"{model}_lora_residuals")


def kv_residuals(fit: Fitted, model: str, max_model_len: int, out_dir: str | Path) -> list[Path]:
    """KV-cache tokens vs A_max per S_max: measured, piecewise fit, failures (x), and the start threshold."""
    p = fit.points
    params = fit.block["params"]
    fig, a = figure(width=COLUMN_WIDTH * 1.4, height=2.6)
    colors = level_colors(p["max_lora_rank"].unique().to_list())
    for (s,), g in p.group_by("max_lora_rank", maintain_order=True):
        ok = g.filter(pl.col("kv_tokens").is_not_null())
        a.plot(ok["max_loras"], ok["kv_tokens"] / 1000, "o", color=colors[s], label=f"S_max {s}")
        bad = g.filter(~pl.col("started"))
        a.plot(bad["max_loras"], np.full(bad.height, max_model_len / 1000), "x", color=colors[s])
        curve = params["points"].get(str(s))
        if curve:
            xs = np.linspace(min(g["max_loras"]), max(g["max_loras"]), 100)
            ys = interp_extrap(xs, np.array(curve["max_loras"]), np.array(curve["tokens"]))
            a.plot(xs, ys / 1000, "-", color=colors[s], lw=0.8)
    a.axhline(max_model_len / 1000, color="k", ls="--", lw=0.8, label="max model length")
    a.set_ylim(bottom=0)
    a.set_xlabel("A_max (GPU adapter slots)")
    a.set_ylabel("KV cache (1000 tokens)")
    a.set_title(f"{model}: KV capacity (x = failed to start)")
    a.legend(frameon=False)
    return save(fig, out_dir, f"{model}_kv_capacity_residuals")


def loading_residuals(fit: Fitted, model: str, out_dir: str | Path) -> list[Path]:
    """Mean CPU -> GPU load time per (S_max, rank) with the spread of the 50 per-request loads."""
    p = fit.points
    fig, a = figure(width=COLUMN_WIDTH * 1.4, height=2.4)
    labels = [f"S{s}/r{r}" for s, r in zip(p["max_lora_rank"], p["adapter_rank"], strict=True)]
    a.bar(labels, p["mean_ms"], yerr=p["std_ms"], color=METHOD_COLORS["twin"], capsize=2)
    a.plot(labels, p["authors_mean_ms"], "k_", ms=12, label="authors' constant")
    a.set_ylabel("load time (ms)")
    a.set_xlabel("S_max / adapter rank")
    a.set_title(f"{model}: adapter loading (mean ± sd)")
    a.legend(frameon=False)
    return save(fig, out_dir, f"{model}_loading_residuals")


def scheduler_residuals(fit: Fitted, out_dir: str | Path) -> list[Path]:
    """Scheduler seconds per step: fitted vs measured, residual against the waiting queue."""
    p = fit.points
    fig, (a, b) = figure(ncols=2)
    a.plot(p["measured"] * 1000, p["predicted"] * 1000, "o", ms=2)
    lim = [0, float(p["measured"].max()) * 1000 * 1.05]
    a.plot(lim, lim, "k-", lw=0.8)
    a.set_xlabel("measured scheduler time per step (ms)")
    a.set_ylabel("fitted (ms)")
    a.set_title("scheduler overhead (model not recorded)")
    b.plot(p["avg_waiting_queue"], (p["predicted"] - p["measured"]) * 1000, "o", ms=2)
    b.axhline(0, color="k", lw=0.8)
    b.set_xlabel("mean waiting queue (requests)")
    b.set_ylabel("residual (ms)")
    return save(fig, out_dir, "scheduler_residuals")


def calibration_figures(fitted: dict[str, Fitted], model: str, max_model_len: int,
                        out_dir: str | Path) -> list[Path]:
    """Every residual figure of one model's calibration."""
    return [
        *step_residuals(fitted["step"], model, out_dir),
        *lora_residuals(fitted["lora"], model, out_dir),
        *kv_residuals(fitted["kv_capacity"], model, max_model_len, out_dir),
        *loading_residuals(fitted["loading"], model, out_dir),
        *scheduler_residuals(fitted["scheduler"], out_dir),
    ]


# ---- validation ---------------------------------------------------------------------------------------------
_FIG8 = (("throughput", "total throughput (tok/s)"), ("itl", "mean ITL (ms)"), ("ttft", "mean TTFT (ms)"))


def real_vs_twin(df: pl.DataFrame, out_dir: str | Path, s_max: int, model: str = "llama-3.1-8b-instruct"
                 ) -> list[Path]:
    """Paper's Fig. 8: real (solid) vs twin (dashed) throughput, ITL, TTFT against served adapters, one colour
    per A_max; rows = low and high rates. Memory errors are not drawn."""
    d = df.filter((pl.col("model") == model) & (pl.col("max_lora_rank") == s_max) & ~pl.col("real_memory_error"))
    sets = [r for r in ("low", "high") if r in d["rate_set"].to_list()]
    fig, axes = figure(ncols=3, nrows=max(len(sets), 1), height=2.0, squeeze=False)
    colors = level_colors(d["max_loras"].unique().to_list()) if d.height else {}
    for i, rs in enumerate(sets):
        g = d.filter(pl.col("rate_set") == rs)
        for j, (metric, label) in enumerate(_FIG8):
            ax = axes[i][j]
            for (max_loras,), line in g.sort("served_adapters").group_by("max_loras", maintain_order=True):
                ax.plot(line["served_adapters"], line[f"real_{metric}"], "o-", color=colors[max_loras],
                        label=f"A_max {max_loras}")
                ax.plot(line["served_adapters"], line[f"twin_{metric}"], "s--", color=colors[max_loras], mfc="none")
            ax.set_xscale("log", base=2)
            if metric == "ttft":
                ax.set_yscale("log")
            ax.set_xlabel("served adapters")
            ax.set_ylabel(label)
            ax.set_title(f"{rs} rates, S_max {s_max}")
    if sets:
        axes[0][0].legend(frameon=False, ncol=2, fontsize=6, title="solid real, dashed twin", title_fontsize=6)
    return save(fig, out_dir, f"fig8_real_vs_twin_smax{s_max}")


def queues_over_time(real: pl.DataFrame, twin: pl.DataFrame, title: str, out_dir: str | Path) -> list[Path]:
    """Paper's Fig. 9: running and waiting requests over time, real (poller samples) vs twin (every 2 s).

    Both frames have columns ``t_s``, ``num_running``, ``num_waiting``.
    """
    fig, (a, b) = figure(ncols=2, height=2.2)
    for ax, col, label in ((a, "num_running", "running requests"), (b, "num_waiting", "waiting requests")):
        ax.plot(real["t_s"], real[col], "-", color=METHOD_COLORS["real"], lw=0.8, label="real")
        ax.plot(twin["t_s"], twin[col], "-", color=METHOD_COLORS["twin"], lw=0.8, label="twin")
        ax.set_xlabel("time since benchmark start (s)")
        ax.set_ylabel(label)
        ax.legend(frameon=False)
    a.set_title(title, loc="left")
    return save(fig, out_dir, "fig9_queues_over_time")


def error_vs_slots(df: pl.DataFrame, out_dir: str | Path) -> list[Path]:
    """Throughput and ITL SMAPE (%) against A_max (mean per A_max, one line per family) and against the
    twin's mean distinct adapters per batch (one point per run): where a LoRA cost charged per slot instead of
    per adapter in the batch shows up. Runs that either side could not run are left out."""
    d = df.filter(pl.col("throughput_smape_pct").is_not_null())
    fig, axes = figure(ncols=2, nrows=2, height=4.0, squeeze=False)
    families = sorted(d["family"].unique().to_list()) if d.height else []
    colors = level_colors(families, cmap="tab10") if families else {}
    for i, (metric, label) in enumerate((("throughput", "throughput SMAPE (%)"), ("itl", "ITL SMAPE (%)"))):
        for fam in families:
            g = d.filter(pl.col("family") == fam)
            by = g.group_by("max_loras").agg(pl.col(f"{metric}_smape_pct").mean()).sort("max_loras")
            axes[i][0].plot(by["max_loras"], by[f"{metric}_smape_pct"], "o-", color=colors[fam], label=fam)
            axes[i][1].plot(g["twin_mean_distinct_adapters"], g[f"{metric}_smape_pct"], "o", ms=2.5, alpha=0.6,
                            color=colors[fam], label=fam)
        axes[i][0].set_xscale("log", base=2)
        axes[i][0].set_xlabel("A_max (GPU adapter slots)")
        axes[i][1].set_xscale("symlog", linthresh=1.0)
        axes[i][1].set_xlabel("twin's mean distinct adapters per batch (adapters)")
        for ax in axes[i]:
            ax.set_ylabel(label)
    if families:
        axes[0][0].legend(frameon=False, fontsize=6)
    return save(fig, out_dir, "error_vs_slots")
