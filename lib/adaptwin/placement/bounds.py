"""The lower bound on GPUs and the twin constants placement needs.

Lower bound: offered load divided by the best per-GPU throughput the twin finds, rounded up. No
placement can do better, whatever it packs, because no GPU configuration the twin knows of processes more
tokens per second. The best throughput comes from the twin-generated dataset when it exists (its largest
``total_throughput`` over the starvation-free configurations that start, since every GPU of a valid placement
is starvation-free) and otherwise from a small twin sweep of saturated rank-8 GPUs (`sweep_best_throughput`,
a looser bound); the source is returned beside the value so outputs state which.

Beyond the formula (`one_gpu_serves`, used by `adaptwin.placement.api.Context.lower_bound` when
``placement.twin_lower_bound`` is on): when the formula gives 1, the single-GPU placement is the only one there
is (its S_max is the largest rank; only A_max is free), so the twin can settle it exhaustively: if no A_max
memory allows serves the whole workload without starvation (the verification's scenario construction and
verdict), no placement on one GPU is valid and the bound is 2. On the default grid this is the 500-adapter x1 workloads:
their load is 96 % of the best GPU's throughput, but 500 adapters on one GPU reach only ~8,200 tok/s.

Offered load in tokens/s = sum of rates x tokens per request, the twin's own mean request size (the value the
surrogate was trained with, or the twin's ShareGPT means), so placement and verification use the same lengths.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from adaptwin.paths import shown
from adaptwin.placement.core import PlacementError

#: saturated single-GPU configurations for the sweep fallback: (served, A_max); rank 8, 4 req/s per adapter
SWEEP_CONFIGS: tuple[tuple[int, int], ...] = ((8, 8), (16, 16), (32, 16), (32, 32), (64, 32))
SWEEP_RATE = 4.0


def tokens_per_request(model: str, predictor: Any = None) -> float:
    """Mean input + output tokens per request: the surrogate's own value (what its training data's ideal
    throughput used) when it records one, else the twin's ShareGPT length distribution for ``model``."""
    value = getattr(predictor, "tokens_per_request", None)
    if value is None:
        from adaptwin.twin.lengths import mean_tokens

        value = mean_tokens({"kind": "sharegpt"}, model)
    if not float(value) > 0:
        raise PlacementError(f"tokens per request for {model}: {value!r} is not positive")
    return float(value)


def dataset_best_throughput(dataset_dir: str | Path) -> float | None:
    """Largest ``total_throughput`` over the dataset's starvation-free rows that started (None if there is no
    dataset): every GPU of a valid placement is starvation-free, so none processes more."""
    from adaptwin.sweep import chunk_files, load_dataset

    if not chunk_files(dataset_dir):
        return None
    # only the current design's rows: chunks of earlier knob settings stay on disk as a cache
    frame = load_dataset(dataset_dir).lazy()
    names = frame.collect_schema().names()
    if "total_throughput" not in names:
        raise PlacementError(f"{dataset_dir}: dataset has no total_throughput column")
    if "memory_error" in names:
        frame = frame.filter(~pl.col("memory_error").fill_null(False))
    if "starved" in names:  # a valid placement has no starved GPU: only starvation-free GPUs bound it
        frame = frame.filter(~pl.col("starved").fill_null(True))
    best = frame.select(pl.col("total_throughput").max()).collect().item()
    return float(best) if best is not None and best > 0 else None


def sweep_best_throughput(model: str, calibration: Any, duration_s: float = 120.0) -> float:
    """Largest throughput over `SWEEP_CONFIGS` simulated by the twin (saturated GPUs: throughput = capacity)."""
    from adaptwin.twin import simulate
    from adaptwin.twin.scenario import make_scenario

    best = 0.0
    for served, max_loras in SWEEP_CONFIGS:
        if calibration is not None and calibration.memory_error(max_loras, 8):
            continue
        scenario = make_scenario(model, [8] * served, [SWEEP_RATE] * served, max_loras, duration_s=duration_s)
        best = max(best, float(simulate(scenario, calibration)["total_throughput"]))
    if best <= 0:
        raise PlacementError(f"twin sweep for {model}: no configuration produced throughput")
    return best


def best_gpu_throughput(model: str, calibration: Any, dataset_dir: str | Path | None = None,
                        duration_s: float = 120.0) -> tuple[float, str]:
    """(best per-GPU tokens/s, source): the dataset if present, else the twin sweep."""
    if dataset_dir is not None:
        best = dataset_best_throughput(dataset_dir)
        if best is not None:
            return best, f"dataset {shown(dataset_dir)} (starvation-free rows)"
    return sweep_best_throughput(model, calibration, duration_s), "twin sweep of saturated rank-8 GPUs"


def lower_bound_gpus(total_rate: float, tokens_per_req: float, best_throughput: float) -> int:
    """ceil(offered tokens/s / best per-GPU tokens/s), at least 1."""
    if best_throughput <= 0:
        raise PlacementError(f"best per-GPU throughput must be positive, got {best_throughput}")
    return max(1, math.ceil(total_rate * tokens_per_req / best_throughput - 1e-9))


def one_gpu_serves(model: str, workload: pl.DataFrame, calibration: Any, a_max_options: list[int],
                   duration_s: float) -> bool:
    """True if the twin serves all of ``workload`` on one GPU (S_max = its largest rank) at some A_max of
    ``a_max_options`` without starvation or memory error: each candidate is a one-GPU placement judged by
    the verification itself (`verify.gpu_scenario`, `verify._simulate`), so the bound and the verdicts agree."""
    from adaptwin.placement import verify
    from adaptwin.placement.core import Gpu, Placement

    members, s_max = tuple(range(workload.height)), int(workload["rank"].max())
    for max_loras in a_max_options:
        placement = Placement(model, "one-gpu", workload, [Gpu(members, int(max_loras), s_max, {})], 1)
        result = verify._simulate((verify.gpu_scenario(placement, placement.gpus[0], duration_s), calibration))
        if result["error"] is None and not (result["starved"] or result["memory_error"]):
            return True
    return False
