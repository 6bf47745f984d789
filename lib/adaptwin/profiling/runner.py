"""Orchestrate profiling runs: adapters -> server -> warm-up -> poller + request streams -> summary -> rows.

The summary is computed as vLLM's ``benchmark_serving.py`` computes it (``calculate_metrics``), so profiled
and replayed runs are comparable: only successful requests count; throughputs divide by the benchmark
duration; TPOT = (latency - TTFT) / (output tokens - 1) for requests with more than one output token;
ITL pools every streamed gap; statistics of an empty list are 0 (so output length 1 gives TPOT = ITL = 0);
percentiles are numpy's linear ones. In fixed-count mode a failed request enters the TTFT statistics with
TTFT = benchmark duration, as in the corpus's fixed-count benchmark (data card 4.3; ``runs.ttft_mean_ms``);
in by-time mode requests still running at the end of the window are cancelled and dropped.

The server is created by a *factory* so the same code drives a real ``vllm serve`` (``vllm_server_factory``)
or, in tests, the loopback fake server.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from adaptwin.io import write_json
from adaptwin.measurements.parse import classify_failure
from adaptwin.paths import resolve
from adaptwin.profiling import adapters as adapters_mod
from adaptwin.profiling import client
from adaptwin.profiling.config import ProfileConfig, RunSpec, expand, model_key
from adaptwin.profiling.prometheus import MetricsPoller, PrometheusParseError, engine_delta, fetch_text
from adaptwin.profiling.server import (
    ServerStartError,
    VllmServer,
    build_command,
    check_environment,
    check_rank,
    list_models,
    read_logs,
    server_version,
    vllm_executable,
    vllm_version,
)
from adaptwin.profiling.writers import (
    kv_capacity_row,
    run_row,
    timeseries_rows,
    write_requests,
    write_result_json,
    write_sent,
    write_server_series,
)


class Server(Protocol):
    """What the runner needs from a running server."""

    base_url: str


ServerFactory = Callable[[RunSpec, dict[str, Path], Path], AbstractContextManager[Server]]


@dataclass
class RunOutcome:
    """The ``runs`` row, ``timeseries`` rows and ``kv_capacity`` row of one run."""

    run: dict[str, Any]
    timeseries: list[dict[str, Any]] = field(default_factory=list)
    kv_capacity: dict[str, Any] | None = None


def summarize(
    outputs: Sequence[client.RequestOutput], duration_s: float, failed_ttft_as_duration: bool = False
) -> dict[str, float | int]:
    """Summary metrics (``runs`` column names) from per-request outputs, as the vLLM benchmark computes them."""
    ok = [o for o in outputs if o.success]
    ttfts = [o.ttft_s for o in ok]
    if failed_ttft_as_duration:
        ttfts += [duration_s for o in outputs if not o.success]
    tpots = [(o.latency_s - o.ttft_s) / (o.output_tokens - 1) for o in ok if o.output_tokens > 1]
    itls = [gap for o in ok for gap in o.itl_s]
    total_in = sum(o.prompt_tokens for o in ok)
    total_out = sum(o.output_tokens for o in ok)
    summary: dict[str, float | int] = {
        "successful_requests": len(ok),
        "duration_s": duration_s,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / duration_s,
        "input_throughput": total_in / duration_s,
        "output_throughput": total_out / duration_s,
        "total_throughput": (total_in + total_out) / duration_s,
    }
    for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls)):
        summary.update(_stats_ms(name, values))
    return summary


def _stats_ms(name: str, values_s: list[float]) -> dict[str, float]:
    arr = np.asarray(values_s or [0.0], dtype=float) * 1000.0
    return {
        f"{name}_mean_ms": float(np.mean(arr)),
        f"{name}_median_ms": float(np.median(arr)),
        f"{name}_p99_ms": float(np.percentile(arr, 99)),
    }


def adapter_names(spec: RunSpec) -> list[str]:
    """Served adapter names ``dummy-0 .. dummy-(n-1)``, as the corpus's fork named them."""
    return [f"dummy-{i}" for i in range(spec.served_adapters)]


def lora_modules(spec: RunSpec, rank_paths: dict[int, Path]) -> dict[str, Path]:
    """``name -> adapter folder``, ranks cycled over the served adapters (``rank_assignment = cyclic``)."""
    ranks = spec.adapter_ranks
    return {name: rank_paths[ranks[i % len(ranks)]] for i, name in enumerate(adapter_names(spec))}


def plan_requests(
    spec: RunSpec, served: list[str], rng: np.random.Generator
) -> tuple[list[client.Request], dict]:
    """The request schedule of a run and what it decided (rates per adapter, aggregated rate)."""
    bench = spec.benchmark
    pool = client.sharegpt_prompts(bench.dataset_path) if bench.dataset == "sharegpt" else None
    if bench.mode == "by_time":
        targets = served or [spec.model]
        rates = client.assign_rates(targets, bench.adapter_rates, rng)
        counts = Counter(rates.values())
        values = sorted(counts)
        setup = {
            "adapter_rates": values,
            "adapter_rate_counts": [counts[v] for v in values],
            "logged_num_adapters": len(targets),
        }
        return client.by_time_schedule(
            rates, bench.total_time_s, bench.input_len, bench.output_len, rng, pool, bench.token_ids
        ), setup
    targets = fixed_count_targets(spec, served)
    rate = bench.request_rate_by_lora * max(1, len(served))
    requests = client.fixed_count_schedule(
        bench.num_prompts, targets, rate, bench.input_len, bench.output_len, rng, pool, bench.token_ids
    )
    return requests, {"request_rate": rate, "traffic_request_rate": rate}


def fixed_count_targets(spec: RunSpec, served: list[str]) -> list[str]:
    """Fixed-count targets: the base model (disable_loras_users, restrict_loras 0, no adapters) or the first
    ``restrict_loras`` adapters (all when unset)."""
    bench = spec.benchmark
    if bench.disable_loras_users or not served or bench.restrict_loras == 0:
        return [spec.model]
    return served[: bench.restrict_loras] if bench.restrict_loras else served


def warmup_requests(spec: RunSpec, served: list[str]) -> list[client.Request]:
    """One request to the base model, or one per adapter with ``lora_pre_loading``, before the benchmark in
    both modes: the first request of a fresh server pays one-off costs (compilation, allocation) that would
    otherwise land in the first seconds of a by-time window."""
    bench = spec.benchmark
    targets = served if bench.lora_pre_loading and served else [spec.model]
    prompt = client.synthetic_prompt(np.random.default_rng(spec.seed), bench.input_len, *bench.token_ids)
    return [
        client.Request(i, 0.0, t, prompt, bench.input_len, bench.output_len) for i, t in enumerate(targets)
    ]


def run_one(spec: RunSpec, cfg: ProfileConfig, work_dir: Path, factory: ServerFactory) -> RunOutcome:
    """Run one configuration end to end; a server that fails to start gives a row with status and reason.

    The ``kv_capacity`` row is read from the server logs in the run folder once the server has stopped (its
    stdout is captured there as ``server_out.log``), plus the logs a failed start reported."""
    run_dir = work_dir / "runs" / spec.run_id
    shape = adapters_mod.resolve_model_shape(spec.model, cfg.adapters.get("model_shape"))
    rank_paths = adapters_mod.ensure_adapters(
        work_dir / "adapters" / model_key(spec.model),
        list(spec.adapter_ranks),
        spec.model,
        shape,
        cfg.target_modules,
    )
    modules = lora_modules(spec, rank_paths)
    job = os.environ.get("SLURM_JOB_ID", "")
    setup: dict[str, Any] = {
        "lora_modules": [p.name for p in dict.fromkeys(modules.values())],
        "vllm_version": spec.vllm_version or vllm_version(),
        "job_id": int(job) if job.isdigit() else None,
    }
    start_logs: dict[str, str] = {}
    try:
        with factory(spec, modules, run_dir) as server:
            try:
                outcome = _measure(spec, server.base_url, list(modules), run_dir, setup)
            except (RuntimeError, OSError, ValueError) as exc:  # the server died or misbehaved mid-run
                log_texts = server.log_texts() if hasattr(server, "log_texts") else {}
                outcome = _failed(spec, setup, f"{type(exc).__name__}: {exc}", log_texts)
    except ServerStartError as exc:
        start_logs = exc.log_texts
        outcome = _failed(spec, setup, str(exc), start_logs)
    outcome.kv_capacity = kv_capacity_row(outcome.run, start_logs | read_logs(run_dir))
    return outcome


def _failed(spec: RunSpec, setup: dict[str, Any], what: str, log_texts: dict[str, str]) -> RunOutcome:
    """A row without result: status and reason from the server logs (the replay ingest's signatures)."""
    status, reason = classify_failure(log_texts)
    row = run_row(
        spec,
        status=status,
        reason=f"{what}; {reason}",
        summary=None,
        window=None,
        samples=[],
        poll_errors=0,
        setup=setup,
    )
    return RunOutcome(row)


def _measure(
    spec: RunSpec, base_url: str, names: list[str], run_dir: Path, setup: dict[str, Any]
) -> RunOutcome:
    listed = set(list_models(base_url))
    missing = [n for n in names if n not in listed]
    if missing:
        raise RuntimeError(
            f"{spec.run_id}: the server lists {len(names) - len(missing)} of {len(names)} adapters "
            f"(missing e.g. {missing[:3]})"
        )
    bench = spec.benchmark
    setup["vllm_version"] = server_version(base_url) or setup["vllm_version"]
    rng = np.random.default_rng(spec.seed)
    requests, decided = plan_requests(spec, names, rng)
    setup.update(decided)
    if warm := warmup_requests(spec, names):
        client.run_benchmark(base_url, warm, None, bench.request_timeout_s)
    before = scrape(base_url + "/metrics")
    poller = MetricsPoller(base_url + "/metrics", interval_s=spec.poller.interval_s).start()
    try:
        window_s = bench.total_time_s if bench.mode == "by_time" else None
        result = client.run_benchmark(base_url, requests, window_s, bench.request_timeout_s)
        time.sleep(spec.poller.tail_s)  # keep polling while the server drains, as the corpus's poller did
    finally:
        samples = poller.stop()
    write_engine_metrics(run_dir, before, scrape(base_url + "/metrics"))
    window = (result.start_time, result.end_time)
    summary = summarize(
        result.outputs, result.duration_s, failed_ttft_as_duration=bench.mode == "fixed_count"
    )
    status, reason = ("ok", None) if summary["successful_requests"] else ("no_summary", _first_error(result))
    write_result_json(run_dir, spec, summary, window, setup.get("request_rate"), _json_extra(result, setup))
    write_requests(run_dir, result.outputs)
    write_sent(run_dir, result.sent_s, {r.index: r.arrival_s for r in requests})
    write_server_series(run_dir, samples, window)
    row = run_row(
        spec,
        status=status,
        reason=reason,
        summary=summary,
        window=window,
        samples=samples,
        poll_errors=len(poller.errors),
        setup=setup,
    )
    return RunOutcome(row, timeseries_rows(spec.run_id, samples, window))


ENGINE_METRICS_NAME = "engine_metrics.json"  # per run: what the engine's own counters grew by (`engine_delta`)


def scrape(url: str, timeout_s: float = 30.0) -> str | None:
    """One ``/metrics`` text, None when the server does not answer (the run goes on without engine totals)."""
    try:
        return fetch_text(url, timeout_s)
    except (OSError, UnicodeDecodeError):
        return None


def write_engine_metrics(run_dir: Path, before: str | None, after: str | None) -> Path | None:
    """The engine's counters and histograms grown over the run (warm-up excluded, drain included) into
    ``engine_metrics.json``: the calibration reads step costs from them rather than from client timings."""
    if before is None or after is None:
        return None
    try:
        delta = engine_delta(before, after)
    except PrometheusParseError:
        return None
    return write_json(run_dir / ENGINE_METRICS_NAME, delta)


def _first_error(result: client.BenchmarkResult) -> str:
    errors = [o.error for o in result.outputs if o.error]
    return (
        f"no successful request; first error: {errors[0]}" if errors else "no request completed in the window"
    )


def _json_extra(result: client.BenchmarkResult, setup: dict[str, Any]) -> dict[str, Any]:
    by_lora: dict[str, list[float]] = {}
    for o in result.outputs:
        if o.success:
            by_lora.setdefault(o.model, []).append(o.ttft_s * 1000.0)
    return {
        "mean_ttfts_ms_by_lora": {k: math.fsum(v) / len(v) for k, v in sorted(by_lora.items())},
        "cancelled_at_window_end": result.cancelled,
        "failed": sum(not o.success for o in result.outputs),
        **{k: v for k, v in setup.items() if k != "request_rate"},
    }


def vllm_server_factory(
    spec: RunSpec, modules: dict[str, Path], run_dir: Path
) -> AbstractContextManager[Server]:
    """Start vLLM for ``spec`` (logs in ``run_dir``); the context waits for readiness, then stops it."""
    command = build_command(spec.server, modules, executable=vllm_executable(), version=spec.vllm_version)
    return VllmServer(
        command, spec.server.base_url, run_dir, ready_timeout_s=spec.ready_timeout_s, env=spec.server.env
    )


def run_all(cfg: ProfileConfig, work_dir: Path, factory: ServerFactory | None = None) -> list[RunOutcome]:
    """Every run of the config, in grid order. Without a factory this is the real thing: vLLM (and a GPU for
    its GPU build) are checked first (``ProfilingUnavailable`` names what is missing), and every run's
    ``max_lora_rank`` against the ranks that vLLM version accepts (ValueError) before any server starts."""
    python = cfg.server.get("python")
    python = str(resolve(python)) if python else None
    if factory is None:
        check_environment(python)
        factory = vllm_server_factory
    version = vllm_version(python) if python or factory is vllm_server_factory else None
    specs = [replace(spec, vllm_version=version) for spec in expand(cfg)]
    for spec in specs:
        check_rank(spec.server.max_lora_rank, version, f"{cfg.source}: run {spec.run_id}")
    return [run_one(spec, cfg, work_dir, factory) for spec in specs]
