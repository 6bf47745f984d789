"""Verification: every GPU of every placement re-simulated with the digital twin.

The surrogate chose the placements; the twin is the ground truth we can afford (notebook 03 validates it against
real runs). Each GPU becomes one single-GPU scenario built by `adaptwin.dataset.sampler.make_scenario` (the same
construction as the training data: S_max = the GPU's largest rank, every adapter held in CPU memory, ShareGPT
lengths, content-derived seed), with the GPU's A_max and the rates routed to it. GPUs are simulated in
parallel by `adaptwin.runner`; results come back in input order, so the table is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import polars as pl

from adaptwin import runner
from adaptwin.placement.core import Gpu, Placement

RESULT_KEYS = ("total_throughput", "ideal_throughput", "offered_throughput", "itl_mean_ms", "ttft_mean_ms", "starved",
               "memory_error")

#: called with 1 after each twin run (`progress`); None = silent
_tick: Callable[[int], None] | None = None


@contextmanager
def progress(tick: Callable[[int], None]) -> Iterator[None]:
    """Report every twin run of `simulate_unique` to ``tick`` (e.g. a tqdm bar's ``update``) while inside:
    twin checks take seconds to minutes, and the command line shows they advance."""
    global _tick
    previous, _tick = _tick, tick
    try:
        yield
    finally:
        _tick = previous


def gpu_scenarios(placement: Placement, duration_s: float, arrivals: str = "poisson") -> list[dict[str, Any]]:
    """The twin scenario of each GPU of ``placement``."""
    return [gpu_scenario(placement, gpu, duration_s, arrivals) for gpu in placement.gpus]


def gpu_scenario(placement: Placement, gpu: Gpu, duration_s: float, arrivals: str = "poisson") -> dict[str, Any]:
    """The twin scenario of one GPU over ``placement``'s workload (routed rates, content seed)."""
    from adaptwin.twin.scenario import make_scenario

    adapters = placement.adapters_of(gpu)
    return make_scenario(placement.model, adapters["rank"].to_list(), adapters["rate"].to_list(), gpu.max_loras,
                         arrivals=arrivals, duration_s=duration_s)


def _simulate(job: tuple[dict[str, Any], Any]) -> dict[str, Any]:
    """One GPU through the twin; a scenario the twin rejects is recorded (``error``), not fatal, so one bad
    GPU does not hide the verdict on all the others."""
    from adaptwin.twin import ScenarioError, simulate

    scenario, calibration = job
    try:
        result = simulate(scenario, calibration)
    except ScenarioError as exc:
        return dict.fromkeys(RESULT_KEYS) | {"error": str(exc)}
    return {k: result.get(k) for k in RESULT_KEYS} | {"error": None}


def verify(placements: Sequence[Placement], calibration: Any, duration_s: float = 600.0, workers: int = 2,
           arrivals: str = "poisson", labels: Sequence[dict[str, Any]] | None = None) -> pl.DataFrame:
    """One row per GPU: ``workload`` (if labelled), ``method``, ``gpu``, ``adapters``, ``max_loras``,
    ``max_lora_rank``, the predicted throughput / ITL / starvation probability, and the twin's
    ``total_throughput``, ``ideal_throughput``, ``itl_mean_ms``, ``ttft_mean_ms``, ``starved``, ``memory_error``
    (and ``error``, the twin's message if it rejected the GPU's scenario)."""
    meta, jobs = [], []
    for p, placement in enumerate(placements):
        label = dict(labels[p]) if labels else {}
        for g, scenario in enumerate(gpu_scenarios(placement, duration_s, arrivals)):
            gpu = placement.gpus[g]
            meta.append({**label, "method": placement.method, "gpu": g, "adapters": len(gpu.members),
                         "max_loras": gpu.max_loras, "max_lora_rank": gpu.max_lora_rank,
                         **{f"predicted_{k}": gpu.predicted[k] for k in gpu.predicted}})
            jobs.append((scenario, calibration))
    results = simulate_unique(jobs, workers)
    rows = [m | r for m, r in zip(meta, results, strict=True)]
    return pl.DataFrame(rows, infer_schema_length=None, schema_overrides={"error": pl.Utf8})


def simulate_unique(jobs: list[tuple[dict[str, Any], Any]], workers: int,
                    cache: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """`_simulate` for every job, each distinct scenario once: methods often build identical GPUs (the greedy
    variants agree on most workloads), and the twin is deterministic, so equal scenarios give equal rows.
    ``cache`` (scenario id -> row, same calibration) carries results across calls."""
    from adaptwin.twin.scenario import scenario_id

    cache = {} if cache is None else cache
    keys = [scenario_id(scenario) for scenario, _ in jobs]
    todo = {k: job for k, job in zip(keys, jobs, strict=True) if k not in cache}
    done = runner.map_ordered(_simulate, list(todo.values()), workers=workers, progress=_tick)
    cache.update(zip(todo, done, strict=True))
    return [dict(cache[k]) for k in keys]


def summarize(per_gpu: pl.DataFrame, by: Sequence[str] = ("workload", "method")) -> pl.DataFrame:
    """Per placement: GPUs used, starved GPUs, memory errors, total twin throughput, throughput-weighted
    mean ITL, and the worst GPU's ITL."""
    keys = [k for k in by if k in per_gpu.columns]
    weight = pl.col("total_throughput")
    return (
        per_gpu.group_by(keys, maintain_order=True)
        .agg(
            pl.len().alias("gpus"),
            pl.col("starved").cast(pl.Int64).sum().alias("starved_gpus"),
            pl.col("memory_error").cast(pl.Int64).sum().alias("memory_errors"),
            pl.col("error").is_not_null().sum().alias("twin_errors"),
            pl.col("total_throughput").sum().alias("total_throughput"),
            pl.col("ideal_throughput").sum().alias("ideal_throughput"),
            ((pl.col("itl_mean_ms") * weight).sum() / weight.sum()).alias("itl_mean_ms"),
            pl.col("itl_mean_ms").max().alias("itl_max_ms"),
        )
    )
