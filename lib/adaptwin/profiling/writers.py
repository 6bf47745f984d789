"""Rows of the replay ingest's ``runs``, ``timeseries`` and ``kv_capacity`` tables from a profiled run, and
their files.

Why here and not in the ingest: a profiled run has no benchmark log to parse, but its rows must mean exactly
what a replayed run's rows mean, so every column name and dtype comes from ``adaptwin.measurements.schema``
(via ``schema.conform``, which refuses undocumented columns) and the per-run result JSON uses the keys of the
corpus's ``openai-*.json`` (``adaptwin.measurements.parse.JSON_KEYS``). The server's own logs are captured
like the corpus's (``server_out.log``), so ``kv_capacity`` is read from them with the ingest's parsers
(``parse_server_out``, `adaptwin.measurements.corpus.kv_capacity_row`).
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from adaptwin.io import write_json, write_parquet
from adaptwin.measurements import schema
from adaptwin.measurements.parse import JSON_KEYS, parse_server_out
from adaptwin.profiling.client import RequestOutput
from adaptwin.profiling.config import RunSpec, model_key
from adaptwin.profiling.prometheus import PollSample

TIME_BASE = "perf_counter"  # poll times and the benchmark window share the client's time.perf_counter clock
INT_SERIES = (
    "num_running",
    "num_waiting",
    "num_preempted",
    "finished",
    "prompt_tokens_total",
    "generation_tokens_total",
)


def run_row(
    spec: RunSpec,
    *,
    status: str,
    reason: str | None,
    summary: dict[str, Any] | None,
    window: tuple[float, float] | None,
    samples: list[PollSample],
    poll_errors: int,
    setup: dict[str, Any],
) -> dict[str, Any]:
    """One ``runs`` row. ``setup`` holds ``runs`` columns the run decided at start-up (vllm_version, job_id,
    lora_modules, adapter_rates, adapter_rate_counts, request_rate, ...)."""
    bench, server = spec.benchmark, spec.server
    row: dict[str, Any] = {
        "run_id": spec.run_id,
        "family": spec.family,
        "subfamily": spec.subfamily,
        "model": model_key(spec.model),
        "enable_lora": bool(server.max_loras),
        "max_loras": server.max_loras,
        "max_cpu_loras": server.max_cpu_loras,
        "served_adapters": spec.served_adapters,
        "max_lora_rank": server.max_lora_rank,
        "max_num_seqs": server.max_num_seqs,
        "adapter_ranks": list(spec.adapter_ranks),
        "rank_assignment": "cyclic" if spec.adapter_ranks else None,
        "gpu_memory_utilization": server.gpu_memory_utilization,
        "benchmark": bench.mode,
        "num_prompts": bench.num_prompts if bench.mode == "fixed_count" else None,
        "total_time_s": bench.total_time_s if bench.mode == "by_time" else None,
        "request_rate_by_lora": bench.request_rate_by_lora if bench.mode == "fixed_count" else None,
        "dataset": bench.dataset,
        "input_len": bench.input_len,
        "output_len": bench.output_len,
        "restrict_loras": bench.restrict_loras,
        "disable_loras_users": bench.disable_loras_users,
        "lora_pre_loading": bench.lora_pre_loading,
        "seed": spec.seed,
        "status": status,
        "reason": reason,
        "flags": [],
        "summary_source": "json" if summary else None,
        "time_base": TIME_BASE,
        "poll_errors": poll_errors,
        "n_samples": len(samples),
        **setup,
        **(summary or {}),
    }
    row.update(_window_columns(window, samples))
    return row


def _window_columns(window: tuple[float, float] | None, samples: list[PollSample]) -> dict[str, Any]:
    running = [s.values.get("num_running") for s in samples]
    cols: dict[str, Any] = {"max_running": _int(max((r for r in running if r is not None), default=None))}
    if window is None:
        return cols
    start, end = window
    inside = [
        r for s, r in zip(samples, running, strict=True) if start <= s.time_raw <= end and r is not None
    ]
    cols.update(
        json_start_time=start,
        json_end_time=end,
        window_start=start,
        window_end=end,
        window_source="json",
        n_samples_in_window=sum(start <= s.time_raw <= end for s in samples),
        mean_running_in_window=math.fsum(inside) / len(inside) if inside else None,
    )
    return cols


def kv_capacity_row(run: dict[str, Any], log_texts: dict[str, str]) -> dict[str, Any]:
    """One ``kv_capacity`` row of a profiled run from its ``runs`` row and its captured server logs
    (``{file name: text}``, e.g. ``server.read_logs(run_dir)``).

    KV tokens and model memory come from the server's startup lines ('GPU KV cache size: N tokens', 'Model
    loading took X GiB and Y seconds'; ``server_out.log`` first, then the other logs), the shortfall of a
    server that refused to start from vLLM's max-seq-len error; status and reason are the run's, so a memory
    error of the server is a ``memory_error`` row with null ``kv_tokens``, as in the replay ingest.
    """
    from adaptwin.measurements.corpus import kv_capacity_row as from_logs

    ordered = sorted(log_texts, key=lambda name: name != "server_out.log")
    out = parse_server_out(cpu_as_gpu("\n".join(log_texts[name] for name in ordered)))
    return from_logs(run, out, (log_texts[name] for name in ordered))


def cpu_as_gpu(text: str) -> str:
    """The CPU backend's startup line ('CPU KV cache size: N tokens') in the GPU wording the ingest's parser
    reads: on a CPU build of vLLM the KV cache lives in host memory, and its size means the same."""
    return text.replace("CPU KV cache size:", "GPU KV cache size:")


def timeseries_rows(run_id: str, samples: list[PollSample], window: tuple[float, float] | None) -> list[dict]:
    """One ``timeseries`` row per successful poll; ``t_s``/``in_window`` relative to the benchmark window."""
    if not samples:
        return []
    first = samples[0].time_raw
    rows = []
    for i, s in enumerate(samples):
        row = {
            "run_id": run_id,
            "sample": i,
            "time_raw": s.time_raw,
            "time_base": TIME_BASE,
            "t_poll_s": s.time_raw - first,
            "t_s": None,
            "in_window": None,
            **{k: (_int(v) if k in INT_SERIES else v) for k, v in s.values.items()},
        }
        if window is not None:
            row["t_s"] = s.time_raw - window[0]
            row["in_window"] = window[0] <= s.time_raw <= window[1]
        rows.append(row)
    return rows


def to_frame(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows -> a frame with the documented schema of ``table`` (``schema.conform``)."""
    if not rows:
        return schema.empty(table)
    dtypes = schema.polars_schema(table)
    columns = {key for row in rows for key in row}
    overrides = {c: dtypes[c] for c in columns if c in dtypes}
    frame = pl.DataFrame(
        [{c: row.get(c) for c in sorted(columns)} for row in rows], schema_overrides=overrides, strict=False
    )
    return schema.conform(table, frame)


def write_tables(out_dir: str | os.PathLike, tables: dict[str, pl.DataFrame]) -> dict[str, Path]:
    """Write each frame as ``<out_dir>/<table>.parquet`` (atomically, conformed to the schema); return paths."""
    return {
        name: write_parquet(Path(out_dir) / f"{name}.parquet", schema.conform(name, frame))
        for name, frame in tables.items()
    }


def write_result_json(
    run_dir: Path,
    spec: RunSpec,
    summary: dict[str, Any],
    window: tuple[float, float],
    rate: float | None,
    extra: dict[str, Any],
) -> Path:
    """The run's result in the corpus's ``openai-<rate>qps-<model>-<date>.json`` format (full precision);
    ``rate`` is the aggregated request rate (None: by-time, written as "inf" like the corpus)."""
    now = datetime.now(timezone.utc)
    rate_text = "inf" if rate is None or math.isinf(rate) else f"{rate:g}"
    data = {key: summary[col] for key, col in JSON_KEYS.items()}
    data.update(
        date=now.strftime("%Y%m%d-%H%M%S"),
        backend="vllm",
        model_id=spec.model,
        tokenizer_id=spec.model,
        num_prompts=spec.benchmark.num_prompts,
        request_rate=rate_text,
        start_time=window[0],
        end_time=window[1],
        **extra,
    )
    name = f"openai-{rate_text}qps-{model_key(spec.model)}-{data['date']}.json"
    return write_json(run_dir / name, _finite(data))


def write_requests(run_dir: Path, outputs: list[RequestOutput]) -> Path:
    """Per-request measurements of a run (``requests.parquet`` beside its JSON), for analyses the summary
    cannot answer (e.g. latency per adapter); not one of the ingest's tables."""
    frame = pl.DataFrame(
        {
            "index": [o.index for o in outputs],
            "model": [o.model for o in outputs],
            "success": [o.success for o in outputs],
            "ttft_s": [o.ttft_s for o in outputs],
            "latency_s": [o.latency_s for o in outputs],
            "prompt_tokens": [o.prompt_tokens for o in outputs],
            "output_tokens": [o.output_tokens for o in outputs],
            "itl_s": [o.itl_s for o in outputs],
            "error": [o.error for o in outputs],
        },
        schema_overrides={"itl_s": pl.List(pl.Float64)},
    )
    return write_parquet(run_dir / "requests.parquet", frame)


SENT_NAME = "sent.parquet"


def write_sent(run_dir: Path, sent: dict[int, float], scheduled: dict[int, float]) -> Path:
    """When the client really sent each request against when it was due (``sent.parquet`` in the run folder:
    ``index``, ``scheduled_s``, ``sent_s``, seconds after the benchmark's start), so a replay can use the
    arrivals the server saw (not one of the ingest's tables)."""
    keys = sorted(sent)
    frame = pl.DataFrame({"index": keys, "scheduled_s": [scheduled.get(k, math.nan) for k in keys],
                          "sent_s": [sent[k] for k in keys]}, schema={"index": pl.Int64, "scheduled_s": pl.Float64,
                                                                     "sent_s": pl.Float64})
    return write_parquet(run_dir / SENT_NAME, frame)


def write_server_series(
    run_dir: Path, samples: list[PollSample], window: tuple[float, float] | None
) -> Path:
    """What each poll saw beyond the ``timeseries`` columns (``server_series.parquet`` in the run folder):
    every finished request over all reasons and the adapters running and waiting, so a run can be checked
    against the server's own counters and its adapter swaps seen (not one of the ingest's tables)."""
    start = window[0] if window else (samples[0].time_raw if samples else 0.0)
    lora = [s.lora for s in samples]
    frame = pl.DataFrame(
        {
            "t_s": [s.time_raw - start for s in samples],
            "finished_total": [s.finished_total for s in samples],
            "prompt_tokens_total": [s.values.get("prompt_tokens_total") for s in samples],
            "generation_tokens_total": [s.values.get("generation_tokens_total") for s in samples],
            "running_adapters": [list(state.running) if state else None for state in lora],
            "waiting_adapters": [list(state.waiting) if state else None for state in lora],
            "max_lora": [state.max_lora if state else None for state in lora],
        },
        schema_overrides={
            "t_s": pl.Float64,
            "finished_total": pl.Float64,
            "prompt_tokens_total": pl.Float64,
            "generation_tokens_total": pl.Float64,
            "running_adapters": pl.List(pl.Utf8),
            "waiting_adapters": pl.List(pl.Utf8),
            "max_lora": pl.Int64,
        },
    )
    return write_parquet(run_dir / "server_series.parquet", frame)


def _finite(obj: Any) -> Any:
    """JSON has no inf/NaN: write them as strings (the corpus wrote request_rate as "inf")."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _int(value: float | None) -> int | None:
    return None if value is None or math.isnan(value) else int(round(value))
