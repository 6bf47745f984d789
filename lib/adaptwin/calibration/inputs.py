"""Select the profiling runs of one model from the measurement tables and reduce each to one fitting point.

This is the only module of `adaptwin.calibration` that knows table and column names
(`adaptwin.measurements.schema`); the cost models in `adaptwin.calibration.models` see small frames of points.
Only the profiling families are read (data card 5.1-5.5): the serving runs (``real_results``, motivation) are
for validation and never reach a fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

#: run_id path fragment of each profiling family (data card section 5); run_id = path under vllm-measurements
DEFAULT_LATENCY = "predictor_default_latency"
LORA_OVERHEAD = "predictor_latency_overhead"
MEMORY = "find_available_gpu_memory_depending_on_loaded_adapters"
LOADING = "predictor_loading"
#: families that may never be used for fitting (validation data)
HELD_OUT = ("real_results", "motivation_figure", "ml_modelling")

TABLES = ("runs", "timeseries", "kv_capacity", "adapter_loading", "scheduler_overhead")

#: share of A_max the mean distinct adapters per batch must reach for a 5.5 row to count as adapter-bound (its
#: admission scan then walks the whole waiting queue, see `visited_estimate`); chosen by leave-one-A_max-out and
#: leave-one-rate-group-out error of the scheduler time among 0.8 / 0.9 / 0.95, with the twin's own visited
#: counts as the held-out regressor (tools/experiments/scheduler_visits.py)
ADAPTER_BOUND_SHARE = 0.8


def visited_estimate(waiting: pl.Expr, served: pl.Expr, max_loras: pl.Expr, bound: pl.Expr) -> pl.Expr:
    """Waiting requests vLLM 0.8.5's admission loop examines per step, estimated from a run's means.

    Why not the queue length: the loop stops at the first request it cannot admit (token budget, KV blocks,
    ``max_num_seqs``), so a queue of requests that merely wait for room costs nothing to scan; but while the
    batch already holds A_max adapters it skips every request of another adapter, and a queue of those is
    walked in full every step (5.5: 5-7.5 ms per step at ~17k waiting and A_max <= 32, 0.6-1 ms at A_max >= 192
    with the same queue). So: the whole queue when the run serves more adapters than slots (``served >
    max_loras``) and its batch is adapter-bound (``bound``), else none. The twin counts the examined requests
    itself (`adaptwin.twin.scheduler.Scheduler._visited`); this estimate only gives the fit its regressor."""
    return pl.when((served > max_loras) & bound).then(waiting).otherwise(0.0).fill_null(0.0)


@dataclass(frozen=True)
class Tables:
    """The measurement tables calibration reads (polars frames)."""

    runs: pl.DataFrame
    timeseries: pl.DataFrame
    kv_capacity: pl.DataFrame
    adapter_loading: pl.DataFrame
    scheduler_overhead: pl.DataFrame


def load_tables(measurements_dir: str | Path) -> Tables:
    """Read ``<measurements_dir>/<table>.parquet`` for every table calibration needs; name a missing file."""
    d = Path(measurements_dir)
    frames = {}
    for name in TABLES:
        path = d / f"{name}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{path}: measurement table {name!r} not found (run the measurements stage)")
        frames[name] = pl.read_parquet(path)
    return Tables(**frames)


def _profiling_runs(runs: pl.DataFrame, model: str, fragment: str) -> pl.DataFrame:
    """ok runs of ``model`` whose run_id lies in the profiling family ``fragment``."""
    sel = runs.filter(
        (pl.col("model") == model) & (pl.col("status") == "ok") & pl.col("run_id").str.contains(f"/{fragment}/")
    )
    leaked = sel.filter(pl.any_horizontal([pl.col("run_id").str.contains(h) for h in HELD_OUT]))
    if leaked.height:
        raise ValueError(f"runs.run_id: validation run {leaked['run_id'][0]!r} selected for fitting")
    return sel


def _window_means(timeseries: pl.DataFrame, run_ids: list[str]) -> pl.DataFrame:
    """Mean running and waiting queue over the benchmark window of each run."""
    return (
        timeseries.filter(pl.col("run_id").is_in(run_ids) & pl.col("in_window").fill_null(False))
        .group_by("run_id")
        .agg(pl.col("num_running").mean().alias("ts_running"), pl.col("num_waiting").mean().alias("mean_waiting"))
    )


def _with_lengths(frame: pl.DataFrame) -> pl.DataFrame:
    """Per-request mean input and output tokens from the summary (the client's token counts)."""
    return frame.with_columns(
        (pl.col("total_input_tokens") / pl.col("successful_requests")).alias("input_tokens"),
        (pl.col("total_output_tokens") / pl.col("successful_requests")).alias("output_tokens"),
    )


_POINT_COLS = ["run_id", "max_num_seqs", "num_prompts", "successful_requests", "duration_s", "total_input_tokens",
               "input_tokens", "output_tokens", "itl_mean_ms", "tpot_mean_ms", "ttft_mean_ms", "mean_running",
               "mean_waiting"]


def _points(tables: Tables, model: str, fragment: str, subfamily_prefix: str) -> pl.DataFrame:
    runs = _profiling_runs(tables.runs, model, fragment).filter(
        pl.col("run_id").str.contains(f"/{model}/{subfamily_prefix}")
    )
    means = _window_means(tables.timeseries, runs["run_id"].to_list())
    out = _with_lengths(runs).join(means, on="run_id", how="left").with_columns(
        pl.coalesce("mean_running_in_window", "ts_running").alias("mean_running"),
        pl.col("mean_waiting").fill_null(0.0),
    )
    # a profiling run spreading its requests over more adapters than slots keeps its batch at A_max adapters
    used = pl.when(pl.col("restrict_loras").fill_null(0) > 0).then(pl.col("restrict_loras")).otherwise(
        pl.col("served_adapters"))
    out = out.with_columns(visited_estimate(pl.col("mean_waiting"), used, pl.col("max_loras"),
                                            pl.lit(True)).alias("mean_visited"))
    return out.select([*_POINT_COLS, "mean_visited", "restrict_loras", "served_adapters", "max_loras",
                       "max_lora_rank"]).sort("run_id")


def decode_points(tables: Tables, model: str) -> pl.DataFrame:
    """Default-latency decode runs (5.1 ``output/``): no LoRA, 1-word prompt, fixed output length."""
    return _points(tables, model, DEFAULT_LATENCY, "output/")


def prefill_points(tables: Tables, model: str) -> pl.DataFrame:
    """Default-latency prefill runs (5.1 ``input/``): no LoRA, output length 1, so every step is prefill."""
    return _points(tables, model, DEFAULT_LATENCY, "input/")


def lora_points(tables: Tables, model: str) -> pl.DataFrame:
    """Every profiling run with LoRA, one point each, plus the no-LoRA baseline of 5.2.

    ``kind``: ``lora`` (5.2 ``overhead_small``: batch ~210, 5-token prompts, 1..300 adapters), ``lora_long``
    (5.2 ``find_max_batch_small``: long prompts, so prefill under LoRA), ``lora_single`` (5.3 loading runs:
    A_max 1, one request at a time, so a batch of 1 with 1 adapter), ``base`` (5.2 ``initial_points_small``,
    no LoRA). ``adapters_used`` is the number of adapters the requests are spread over."""
    frames = []
    for fragment, sub, kind in ((LORA_OVERHEAD, "overhead_small/", "lora"),
                                (LORA_OVERHEAD, "find_max_batch_small/", "lora_long"),
                                (LOADING, "adapter_rank_", "lora_single"),
                                (LORA_OVERHEAD, "initial_points_small/", "base")):
        p = _points(tables, model, fragment, sub).with_columns(pl.lit(kind).alias("kind"))
        frames.append(p)
    out = pl.concat(frames, how="vertical_relaxed")
    used = (
        pl.when(pl.col("kind") == "base").then(0)
        .when(pl.col("kind") == "lora_single").then(1)
        .when(pl.col("restrict_loras").fill_null(0) > 0).then(pl.col("restrict_loras"))
        .otherwise(pl.col("served_adapters"))
    )
    return out.with_columns(used.cast(pl.Int64).alias("adapters_used"))


def kv_points(tables: Tables, model: str) -> pl.DataFrame:
    """Available-memory runs (5.4): KV tokens per (A_max, S_max), and whether the server started.

    Placeholder runs started (status 'placeholder') but have no KV reading; memory errors did not start.
    """
    kv = tables.kv_capacity.filter(pl.col("model") == model)
    return kv.select(
        "run_id", "max_loras", "max_lora_rank", "kv_tokens", "status",
        pl.col("status").is_in(["ok", "placeholder"]).alias("started"),
    ).sort("max_lora_rank", "max_loras")


def loading_points(tables: Tables, model: str) -> pl.DataFrame:
    """Adapter-loading runs (5.3): the authors' per-run mean CPU -> GPU load time in ms, per (S_max, rank)."""
    al = tables.adapter_loading.filter(
        (pl.col("model") == model) & (pl.col("source") == "memory") & (pl.col("phase") == "request")
    )
    return (
        al.group_by("max_lora_rank", "adapter_rank")
        .agg(
            pl.col("authors_mean_ms").first().alias("authors_mean_ms"),
            pl.col("load_time_ms").mean().alias("mean_ms"),
            pl.col("load_time_ms").std().alias("std_ms"),
            pl.len().alias("n_loads"),
        )
        .sort("max_lora_rank", "adapter_rank")
    )


def scheduler_points(tables: Tables) -> pl.DataFrame:
    """Scheduler-overhead rows (5.5): scheduling seconds per step against running requests and the waiting
    requests the admission loop examines (``visited``, `visited_estimate`; the queue is kept for figures).

    The CSVs do not record the model, so every model gets the same scheduler fit.
    """
    return tables.scheduler_overhead.select(
        "source", "gpu_loras", "cpu_loras", "avg_batch_size", "avg_waiting_queue", "mean_loras_by_batch",
        _table_visited().alias("visited"),
        (pl.col("total_scheduling_time") / pl.col("steps")).alias("sched_s"),
    )


def _table_visited() -> pl.Expr:
    """`visited_estimate` of a 5.5 row: adapter-bound when its measured distinct adapters per batch reach
    `ADAPTER_BOUND_SHARE` of its slots."""
    bound = pl.col("mean_loras_by_batch") >= ADAPTER_BOUND_SHARE * pl.col("gpu_loras")
    return visited_estimate(pl.col("avg_waiting_queue").cast(pl.Float64), pl.col("cpu_loras"),
                            pl.col("gpu_loras"), bound)


def lora_table_points(tables: Tables, input_mean: float, output_mean: float) -> pl.DataFrame:
    """Scheduler-overhead rows (5.5) as serving-condition LoRA points, one per run, reduced to a mean step.

    Kept: every adapter in a GPU slot (``cpu_loras == gpu_loras``: no adapter loads in the ITL) and no queue
    (``avg_waiting_queue < 1``: the step mix follows from the arrivals). Per step: ``mean_running`` decode
    sequences with ``mean_loras_by_batch`` distinct adapters (measured, not expected), and the prompts of the
    completed requests spread over the steps (``input_mean`` tokens each: the tables record output tokens
    only). ``max_loras`` is A_max. The tables do not name the model (see `adaptwin.calibration.fit.fit_model`).
    """
    t = tables.scheduler_overhead.filter(
        (pl.col("cpu_loras") == pl.col("gpu_loras")) & (pl.col("avg_waiting_queue") < 1.0) & (pl.col("steps") > 0))
    return t.select(
        (pl.col("source") + ":" + pl.col("gpu_loras").cast(pl.Utf8) + "/" + pl.col("rate").cast(pl.Utf8)).alias("run_id"),
        pl.lit("table").alias("kind"),
        pl.col("gpu_loras").cast(pl.Int64).alias("max_loras"),
        pl.col("cpu_loras").cast(pl.Int64).alias("adapters_used"),
        *step_mix(input_mean, output_mean),
        pl.col("mean_itl_ms").cast(pl.Float64).alias("itl_mean_ms"),
        pl.lit(float(output_mean)).alias("output_tokens"),
    )


def step_mix(input_mean: float, output_mean: float) -> list[pl.Expr]:
    """The mean engine step of a scheduler-overhead row (5.5): running and waiting sequences, distinct adapters,
    prompt tokens and prompts per step (completed requests / steps, each with ``input_mean`` tokens) and the
    context the running sequences read (half their output generated, on average)."""
    per_step = pl.col("completed_requests") / pl.col("steps")
    return [
        pl.col("avg_batch_size").cast(pl.Float64).alias("mean_running"),
        pl.col("avg_waiting_queue").cast(pl.Float64).alias("mean_waiting"),
        _table_visited().alias("mean_visited"),
        pl.col("mean_loras_by_batch").cast(pl.Float64).alias("distinct_adapters"),
        (per_step * input_mean).alias("prefill_tokens"),
        per_step.alias("prefill_seqs"),
        (pl.col("avg_batch_size") * (input_mean + output_mean / 2.0)).alias("context_tokens"),
    ]


def swap_table_points(tables: Tables, input_mean: float, output_mean: float) -> pl.DataFrame:
    """Scheduler-overhead rows (5.5) as mean engine steps with and without adapter swaps, one per run.

    Kept: no queue (``avg_waiting_queue < 1``) and a busy server (``avg_batch_size >= 5``, so the run's
    duration / steps is the mean step time, not idle time). Rows with ``cpu_loras > gpu_loras`` swap
    adapters: ``loads_per_step`` counts their CPU -> GPU loads while serving (start-up loads excluded).
    Same per-step mix as `lora_table_points`."""
    t = tables.scheduler_overhead.filter(
        (pl.col("avg_waiting_queue") < 1.0) & (pl.col("avg_batch_size") >= 5.0) & (pl.col("steps") > 0))
    return t.select(
        pl.col("source"),
        pl.col("gpu_loras").cast(pl.Int64).alias("max_loras"),
        pl.col("cpu_loras").cast(pl.Int64).alias("served"),
        *step_mix(input_mean, output_mean),
        (pl.col("duration") / pl.col("steps")).alias("step_s"),
        (pl.col("max_lora_loads_from_memory_corrected") / pl.col("steps")).alias("loads_per_step"),
    )


#: seconds the harness's poller sleeps between polls of /metrics (data card 4.5); a poll gap beyond it is the
#: time the server took to answer
POLL_SLEEP_S = 2.0


def scrape_points(tables: Tables, model: str) -> pl.DataFrame:
    """Per poll of ``model``'s base-model profiling runs (5.1, no LoRA, so no adapter labels): the seconds the
    /metrics request took, i.e. the gap since the previous poll minus the poller's sleep."""
    runs = _profiling_runs(tables.runs, model, "predictor_default_latency")["run_id"].to_list()
    return (tables.timeseries.filter(pl.col("run_id").is_in(runs))
            .sort("run_id", "sample")
            .with_columns((pl.col("t_s").diff().over("run_id") - POLL_SLEEP_S).alias("scrape_s"))
            .filter(pl.col("in_window").fill_null(False) & pl.col("scrape_s").is_not_null())
            .select("run_id", "t_s", "scrape_s"))
