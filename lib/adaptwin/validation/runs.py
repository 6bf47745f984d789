"""Twin validation (stage `validate_twin`): re-simulate every serving run of the corpus and score the twin.

Each ``ok`` and ``memory_error`` by-time run of ``real_results`` (data card 5.6) becomes a scenario with the
run's exact configuration (A_max, served adapters, S_max, max-num-seqs, per-adapter rates with the logged
counts, ranks cycling over the dummy adapters) and the calibration fitted from the profiling families; nothing
is taken from the run's outcome (no arrival times, no queue caps). The twin's output is compared with the
run's summary: SMAPE of total throughput, ITL and TTFT, agreement of the starvation verdict and of memory
errors, per (model, S_max, rate set).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adaptwin import runner
from adaptwin.io import write_json, write_parquet
from adaptwin.layout import Layout
from adaptwin.params import config_from_section
from adaptwin.rules import ideal_throughput, is_starved, smape

#: runs whose outcome can be compared (the 2 cancelled runs have no summary)
VALIDATED_STATUSES = ("ok", "memory_error")
#: compared metrics: name -> result key (TTFT's median and 99th percentile tell a tail from a shift)
METRICS = {"throughput": "total_throughput", "itl": "itl_mean_ms", "ttft": "ttft_mean_ms",
           "ttft_median": "ttft_median_ms", "ttft_p99": "ttft_p99_ms"}
#: twin result keys kept per run
TWIN_KEYS = ("total_throughput", "itl_mean_ms", "ttft_mean_ms", "ttft_median_ms", "ttft_p99_ms",
             "metrics_render_s", "finished_requests", "arrived_requests",
             "mean_batch_size", "mean_distinct_adapters", "preemptions", "adapter_loads", "ideal_throughput",
             "starved", "memory_error", "wall_time_s", "throughput_sd", "replicas")
#: A_max bands whose errors the twin must keep close (many slots vs few)
LOW_A_MAX, HIGH_A_MAX = 64, 128


def rate_set(rates: list[float]) -> str:
    """'low' for 0.1/0.05/0.025 req/s per adapter, 'high' for 1.6/0.8/0.4 (data card 5.6)."""
    return "high" if max(rates) >= 1.0 else "low"


@dataclass(frozen=True)
class ValidationConfig:
    """Knobs of the validation (the `validation:` section of params.yaml)."""

    input_mean: float = 223.0     # ShareGPT pool mean per request, Llama-3.1 tokenizer ('Prompts retrieved')
    output_mean: float = 197.0
    duration_scale: float = 1.0   # fraction of each run's 3600 s to simulate (smoke runs use less)
    max_runs: int | None = None   # validate only the first N runs (smoke)
    workers: int = 2
    seed: int = 0
    #: twin draws per run (seeds seed .. seed + replicas - 1: the rate-to-adapter mapping, which the runs did not
    #: log, and the arrivals): the twin's prediction is their mean, since a run near saturation is chaotic and
    #: one draw of it is as far from its mean as from the real run
    replicas: int = 1
    max_num_batched_tokens: int = 2048
    #: use each run's own pre-sampled prompt pool means (runs.pool_*: the client drew its requests from that
    #: pool, so it is configuration, not outcome); runs without a pool fall back to input_mean / output_mean
    pool_means: bool = True
    #: at most this many runs per (family, rate group, A_max, status), spread over served adapters (None: all)
    sample_per_cell: int | None = None
    families: tuple[str, ...] = ("real_results", "heterogeneous_results")  # run families re-simulated
    fig9_run: str | None = None  # suffix of the run shown running/waiting over time (Fig. 9)

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> ValidationConfig:
        """The config of a params.yaml ``validation:`` section; an unknown key or a bad value raises a
        ValueError naming it."""
        config = config_from_section(cls, section, "validation")
        if config.replicas < 1:
            raise ValueError(f"validation.replicas: {config.replicas} is not a positive integer")
        return config


def run_means(row: dict[str, Any], cfg: ValidationConfig) -> tuple[float, float]:
    """Mean (prompt, output) tokens per request of one run: its prompt pool's, else the configured ones."""
    prompts = row.get("pool_prompts")
    if cfg.pool_means and prompts:
        return float(row["pool_input_tokens"]) / prompts, float(row["pool_output_tokens"]) / prompts
    return cfg.input_mean, cfg.output_mean


def rate_group(run_id: str) -> str:
    """The run's group folder (data card 5.6 ``rank_<S>_rates_...``, 5.9 ``rate_..._size_...``)."""
    parts = run_id.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else run_id


def serving_runs(runs: pl.DataFrame, families: list[str], max_runs: int | None = None) -> pl.DataFrame:
    """The serving runs to validate: ``ok`` and ``memory_error`` runs of ``families``, in a stable order.

    With ``max_runs`` the selection is spread over the groups (S_max x rate set) so a smoke run still sees
    every kind of run, including memory errors.
    """
    # a run flagged shared_server measured another job's server: its summary is not its configuration's
    sel = runs.filter(pl.col("family").is_in(families) & pl.col("status").is_in(VALIDATED_STATUSES)
                      & ~pl.col("flags").list.contains("shared_server"))
    if sel.height == 0:
        raise ValueError(f"runs.family: no ok/memory_error runs in {families}")
    sel = sel.with_columns(
        pl.col("adapter_rates").map_elements(rate_set, return_dtype=pl.Utf8).alias("rate_set")
    ).sort("model", "max_lora_rank", "rate_set", "max_loras", "served_adapters", "run_id")
    if max_runs is not None and max_runs < sel.height:
        # families take turns (round-robin on the within-group index), so every family is seen
        sel = (sel.with_columns(pl.int_range(pl.len()).over("family", "model", "max_lora_rank", "rate_set", "status")
                                .alias("_k"))
               .with_columns(pl.int_range(pl.len()).over("family", "_k").alias("_f"))
               .sort("_k", "_f", "family", "run_id").head(max_runs).drop("_k", "_f")
               .sort("model", "max_lora_rank", "rate_set", "max_loras", "served_adapters", "run_id"))
    return sel


def spread_sample(sel: pl.DataFrame, per_cell: int) -> pl.DataFrame:
    """At most ``per_cell`` runs per (family, rate group, A_max, status), evenly spaced over the served
    adapters of the cell (deterministic): a sample that still sees every workload and slot count when the
    whole corpus is too slow to re-simulate."""
    keyed = sel.with_columns(pl.col("run_id").map_elements(rate_group, return_dtype=pl.Utf8).alias("_g"))
    cells = ["family", "_g", "max_loras", "status"]
    keyed = keyed.sort([*cells, "served_adapters", "run_id"]).with_columns(
        pl.int_range(pl.len()).over(cells).alias("_i"), pl.len().over(cells).alias("_n"))
    # the i-th of n runs is kept when it is the first at or past one of per_cell evenly spaced positions
    pos = (pl.col("_i") * per_cell / pl.col("_n")).floor()
    prev = ((pl.col("_i") - 1) * per_cell / pl.col("_n")).floor()
    keep = (pl.col("_i") == 0) | (pos != prev)
    return keyed.filter(keep).drop("_g", "_i", "_n").sort(
        "model", "max_lora_rank", "rate_set", "max_loras", "served_adapters", "run_id")


def rate_counts(row: dict[str, Any]) -> tuple[list[float], list[int]]:
    """Per-adapter rate values and how many adapters have each.

    The logged counts when present; runs whose server never started logged none, so the benchmark's cyclic
    assignment of the Namespace ``adapter_rates`` over the served adapters is reproduced.
    """
    rates = [float(r) for r in row["adapter_rates"]]
    if row.get("adapter_rate_counts") is not None:
        return rates, [int(c) for c in row["adapter_rate_counts"]]
    served, k = int(row["served_adapters"]), len(rates)
    return rates, [served // k + (1 if i < served % k else 0) for i in range(k)]


def scenario_for_run(row: dict[str, Any], cfg: ValidationConfig, replica: int = 0) -> dict[str, Any]:
    """The twin scenario of one by-time serving run: its configuration only, never its outcome.

    Ranks cycle over the run's adapter folders (``--dummy-lora-modules``); rates are assigned cyclically and
    shuffled, as the benchmark does ("Adapter rates ... Counts"), with a generator seeded from ``cfg.seed`` +
    ``replica`` (which also seeds the arrivals).
    """
    seed = cfg.seed + replica
    served = int(row["served_adapters"])
    ranks = [int(row["adapter_ranks"][i % len(row["adapter_ranks"])]) for i in range(served)]
    values, counts = rate_counts(row)
    rates = np.repeat(np.asarray(values, float), np.asarray(counts, int))
    if len(rates) != served:
        raise ValueError(f"runs.adapter_rate_counts of {row['run_id']}: {counts} sum to {len(rates)}, "
                         f"served_adapters is {served}")
    rates = np.random.default_rng(seed).permutation(rates)
    means = run_means(row, cfg)
    return {
        "model": row["model"],
        "server": {"max_loras": int(row["max_loras"]), "max_cpu_loras": served,
                   "max_lora_rank": int(row["max_lora_rank"]), "max_num_seqs": int(row["max_num_seqs"]),
                   "max_num_batched_tokens": cfg.max_num_batched_tokens},
        "adapters": {"ranks": ranks, "rates": [float(r) for r in rates]},
        "arrivals": {"kind": "poisson"},
        "lengths": {"kind": "sharegpt", "input_mean": means[0], "output_mean": means[1]},
        "duration_s": float(row["total_time_s"]) * cfg.duration_scale,
        "seed": seed,
    }


def _simulate_one(args: tuple[dict[str, Any], str]) -> dict[str, Any]:
    """Worker: run the twin on one scenario with the calibration file at ``path``."""
    from adaptwin.calibration.costs import load_calibration
    from adaptwin.twin import simulate

    scenario, path = args
    return simulate(scenario, load_calibration(path))


def simulate_runs(scenarios: list[dict[str, Any]], calibration_paths: dict[str, str],
                  workers: int = 2) -> list[dict[str, Any]]:
    """Simulate every scenario (on ``workers`` Dask workers, `adaptwin.runner`), in order."""
    jobs = [(s, str(calibration_paths[s["model"]])) for s in scenarios]
    return runner.map_ordered(_simulate_one, jobs, workers=min(workers, os.cpu_count() or 1))


def mean_result(draws: list[dict[str, Any]]) -> dict[str, Any]:
    """One prediction from a run's replica draws: numbers averaged, the starvation verdict taken on the mean
    throughput, ``throughput_sd`` the spread of the draws (0 for one draw), ``replicas`` their count."""
    first = draws[0]
    out = dict(first)
    for key, value in first.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [d[key] for d in draws]
            out[key] = None if any(v is None or not math.isfinite(v) for v in values) else float(np.mean(values))
    if not first.get("memory_error"):
        out["starved"] = is_starved(out["total_throughput"], out["ideal_throughput"])
    out["throughput_sd"] = float(np.std([d["total_throughput"] for d in draws]))
    out["replicas"] = len(draws)
    return out


def compare(runs: pl.DataFrame, results: list[dict[str, Any]], cfg: ValidationConfig) -> pl.DataFrame:
    """One row per run: real vs twin metrics, per-run SMAPEs, starvation and memory-error verdicts."""
    rows = []
    for run, res in zip(runs.iter_rows(named=True), results, strict=True):
        ideal = ideal_throughput(*rate_counts(run), *run_means(run, cfg))
        real_mem = run["status"] == "memory_error"
        row = {k: run[k] for k in ("run_id", "family", "model", "max_loras", "served_adapters", "max_lora_rank",
                                   "rate_set", "status")}
        row["rate_group"] = rate_group(run["run_id"])
        row.update({f"real_{m}": (None if real_mem else run[c]) for m, c in METRICS.items()})
        row.update({f"twin_{m}": res.get(c) for m, c in METRICS.items()})
        row.update({f"twin_{k}": res.get(k) for k in TWIN_KEYS if k not in METRICS.values()})
        row["ideal_throughput"] = ideal
        row["real_memory_error"] = real_mem
        row["real_starved"] = None if real_mem else is_starved(run["total_throughput"], ideal)
        row["real_mean_running"] = run["mean_running_in_window"]
        row["simulated_s"] = float(run["total_time_s"]) * cfg.duration_scale
        rows.append(row)
    df = pl.DataFrame(rows, infer_schema_length=None)
    both_ok = ~pl.col("real_memory_error") & ~pl.col("twin_memory_error")
    for m in METRICS:
        for paper, suffix in ((False, ""), (True, "_paper")):
            df = df.with_columns(
                pl.when(both_ok).then(pl.struct(f"real_{m}", f"twin_{m}").map_batches(
                    lambda s, m=m, paper=paper: pl.Series(smape(s.struct.field(f"real_{m}").to_numpy(),
                                                                s.struct.field(f"twin_{m}").to_numpy(),
                                                                paper=paper)))
                ).alias(f"{m}_smape_pct{suffix}")
            )
    return df.with_columns(
        (pl.col("real_memory_error") == pl.col("twin_memory_error")).alias("memory_error_agrees"),
        pl.when(both_ok).then(pl.col("real_starved") == pl.col("twin_starved")).alias("starvation_agrees"),
    )


def _summary(df: pl.DataFrame) -> dict[str, Any]:
    ok = df.filter(pl.col("throughput_smape_pct").is_not_null())
    out = {
        "n_runs": df.height,
        "n_compared": ok.height,
        "n_memory_error_real": int(df["real_memory_error"].sum()),
        "memory_error_agreement_pct": _pct(df["memory_error_agrees"]),
        "starvation_agreement_pct": _pct(ok["starvation_agrees"]) if ok.height else None,
    }
    for m in METRICS:
        out[f"{m}_smape_pct"] = _mean(ok[f"{m}_smape_pct"])
        out[f"{m}_smape_pct_paper_convention"] = _mean(ok[f"{m}_smape_pct_paper"])
    return out


def _pct(s: pl.Series) -> float | None:
    s = s.drop_nulls()
    return float(s.cast(pl.Float64).mean() * 100) if s.len() else None


def _mean(s: pl.Series) -> float | None:
    s = s.drop_nulls()
    return float(s.mean()) if s.len() else None


def summarize(df: pl.DataFrame) -> dict[str, Any]:
    """Headline numbers (keys of data/metrics/twin_validation.json), the per-group breakdown, and per family
    the breakdowns by S_max, rate group and A_max with the gap between many and few slots; the same per model
    under ``models.<model>`` (``families`` pools the models whose runs share a family folder)."""
    out = _summary(df)
    out["groups"] = {
        f"{model}/S_max={s}/{rs}": _summary(g)
        for (model, s, rs), g in df.group_by("model", "max_lora_rank", "rate_set", maintain_order=True)
    }
    out["families"] = {fam: family_summary(g) for (fam,), g in df.group_by("family", maintain_order=True)}
    # a family folder may hold several models' runs: "families" pools them, "models" keeps each model apart
    out["models"] = {
        model: {**_summary(g), "families": {fam: family_summary(f)
                                            for (fam,), f in g.group_by("family", maintain_order=True)}}
        for (model,), g in df.group_by("model", maintain_order=True)
    }
    sim = df.filter(~pl.col("twin_memory_error") & (pl.col("twin_wall_time_s") > 0))
    if sim.height:
        speed = (sim["simulated_s"] / sim["twin_wall_time_s"]).to_numpy()
        out["speedup"] = {"simulated_s_per_wall_s_median": float(np.median(speed)),
                          "simulated_s_per_wall_s_min": float(speed.min()),
                          "simulated_s_per_wall_s_max": float(speed.max()),
                          "wall_time_s_total": float(sim["twin_wall_time_s"].sum()),
                          "note": "one process per run; noisy on a shared 2-core machine"}
    return out


#: per-run columns the breakdowns group by
BREAKDOWNS = {"s_max": "max_lora_rank", "rate_group": "rate_group", "a_max": "max_loras"}


def family_summary(df: pl.DataFrame) -> dict[str, Any]:
    """One family's headline numbers, by S_max / rate group / A_max, and ``a_max_gap``: mean SMAPE at
    A_max >= 128 minus at A_max <= 64 per metric (a twin that charges the wrong LoRA cost per slot opens it)."""
    out = _summary(df)
    for name, col in BREAKDOWNS.items():
        out[f"by_{name}"] = {str(v): _summary(g) for (v,), g in df.sort(col).group_by(col, maintain_order=True)}
    out["a_max_gap"] = a_max_gap(df)
    return out


def a_max_gap(df: pl.DataFrame) -> dict[str, float | None]:
    """Per metric, mean SMAPE at A_max >= 128 minus at A_max <= 64 (None where a band has no compared run)."""
    high, low = df.filter(pl.col("max_loras") >= HIGH_A_MAX), df.filter(pl.col("max_loras") <= LOW_A_MAX)
    gap = {}
    for m in METRICS:
        h, lo = _mean(high[f"{m}_smape_pct"]), _mean(low[f"{m}_smape_pct"])
        gap[f"{m}_smape_pct"] = None if h is None or lo is None else h - lo
    return gap


def first_draw_summary(df: pl.DataFrame) -> dict[str, Any]:
    """Per model and family, the headline numbers and A_max gap of the first replica alone (seed ``seed``):
    what one draw of the twin scores, beside the mean of the draws."""
    return {model: {fam: {**_summary(f), "a_max_gap": a_max_gap(f)}
                    for (fam,), f in g.group_by("family", maintain_order=True)}
            for (model,), g in df.group_by("model", maintain_order=True)}


def table(df: pl.DataFrame) -> pl.DataFrame:
    """Table-1-style rows per family: by (S_max, rate group), by A_max, the family, and all runs; SMAPEs
    (usual and paper convention) and agreements."""
    rows = []

    def add(summ: dict[str, Any], **keys: Any) -> None:
        rows.append({"family": None, "model": None, "S_max": None, "rates": None, "A_max": None, **keys,
                     "runs": summ["n_runs"], "compared": summ["n_compared"],
                     **{k: summ[k] for k in summ if k.endswith(("_pct", "_convention"))}})

    for (fam, model), f in df.group_by("family", "model", maintain_order=True):
        for (s, rg), g in f.group_by("max_lora_rank", "rate_group", maintain_order=True):
            add(_summary(g), family=fam, model=model, S_max=s, rates=rg)
        for (a,), g in f.sort("max_loras").group_by("max_loras", maintain_order=True):
            add(_summary(g), family=fam, model=model, rates="all", A_max=a)
        add(_summary(f), family=fam, model=model, rates="all")
    add(_summary(df), family="all", model="all", rates="all")
    return pl.DataFrame(rows, infer_schema_length=None)


def validate(runs: pl.DataFrame, calibration_paths: dict[str, str], families: list[str],
             cfg: ValidationConfig) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Select, simulate and compare: the per-run frame and the summary dict."""
    sel = serving_runs(runs, families, cfg.max_runs)
    if cfg.sample_per_cell is not None:
        sel = spread_sample(sel, cfg.sample_per_cell)
    missing = sorted(set(sel["model"]) - set(calibration_paths))
    if missing:
        raise ValueError(f"runs.model: no calibration for {missing} (calibrated: {sorted(calibration_paths)})")
    k = cfg.replicas
    scenarios = [scenario_for_run(r, cfg, i) for r in sel.iter_rows(named=True) for i in range(k)]
    draws = simulate_runs(scenarios, calibration_paths, cfg.workers)
    results = [mean_result(draws[j:j + k]) for j in range(0, len(draws), k)]
    df = compare(sel, results, cfg)
    summary = summarize(df)
    summary["replicas"] = k
    summary["first_draw"] = first_draw_summary(compare(sel, draws[::k], cfg))
    summary["lora_forms"] = lora_forms(calibration_paths, sorted(set(df["model"])))
    return df, summary


def lora_forms(calibration_paths: dict[str, str], models: list[str]) -> dict[str, Any]:
    """Per model, the LoRA candidate forms its calibration compared: in-sample and held-out (leave one A_max
    out, leave one rate group out) mean |relative ITL error| on the profiling rows, and the chosen form.
    Every serving-run error above is held out too: no serving run enters any fit."""
    out = {}
    for model in models:
        quality = json.loads(Path(calibration_paths[model]).read_text())["fit_quality"]["lora"]
        keep = ("form", "in_sample_pct", "leave_one_a_max_out_pct", "leave_one_rate_group_out_pct", "held_out_pct")
        out[model] = {"chosen": quality.get("chosen_form"),
                      "forms": [{k: f[k] for k in keep} for f in quality.get("forms", [])]}
    return out


def write_outputs(df: pl.DataFrame, summary: dict[str, Any], data_dir: str | Path) -> dict[str, Path]:
    """``<data_dir>/validation/runs.parquet`` (per run), ``.../table.parquet`` (Table-1-like) and
    ``<data_dir>/metrics/twin_validation.json`` (headline numbers), all atomic."""
    d = Layout.at(data_dir)
    return {
        "runs": write_parquet(d.validation("runs"), df),
        "table": write_parquet(d.validation("table"), table(df)),
        "metrics": write_json(d.metrics("twin_validation"), _finite(summary)),
    }


def _finite(obj: Any) -> Any:
    """NaN/inf -> None so the metrics file is valid JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def queues(runs: pl.DataFrame, timeseries: pl.DataFrame, run_suffix: str, cfg: ValidationConfig,
           calibration_paths: dict[str, str]) -> tuple[dict[str, Any], pl.DataFrame, pl.DataFrame]:
    """Fig. 9 data for the run whose run_id ends with ``run_suffix``: the real running/waiting samples inside
    the benchmark window and the twin's series (sampled every 2 s like the poller)."""
    from adaptwin.calibration.costs import load_calibration
    from adaptwin.twin import simulate

    sel = serving_runs(runs, sorted(set(runs["family"])), None).filter(
        pl.col("run_id").str.ends_with("/" + run_suffix.strip("/")))
    if sel.height != 1:
        raise ValueError(f"validation.fig9_run: {run_suffix!r} matches {sel.height} serving runs, expected 1")
    row = sel.row(0, named=True)
    scenario = scenario_for_run(row, cfg)
    real = (timeseries.filter((pl.col("run_id") == row["run_id"]) & pl.col("in_window").fill_null(False)
                              & (pl.col("t_s") <= scenario["duration_s"]))
            .select("t_s", "num_running", "num_waiting").sort("t_s"))
    res = simulate(scenario, load_calibration(calibration_paths[row["model"]]), timeseries=True)
    twin = pl.DataFrame(res["timeseries"]).select("t_s", "num_running", "num_waiting")
    return row, real, twin
