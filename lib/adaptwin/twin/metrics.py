"""The outputs of a run, computed as vLLM's by-time benchmark computes them.

* requests arrive in [0, duration_s); at duration_s unfinished requests are cancelled and dropped;
* throughputs = tokens (or requests) of finished requests / duration_s;
* TTFT statistics over finished requests; ITL pools every inter-token gap of finished requests
  (``np.mean`` / ``np.median`` / ``np.percentile(.., 99)`` of the pooled list, in ms). The twin stores gaps
  as (step duration, number of finished requests that had a gap in that step) pairs plus the few gaps that
  span a preemption, and `weighted_percentile` reproduces numpy's linear-interpolation percentile exactly;
* mean_batch_size = time-average of the running batch over the window (the real poller samples it every 2 s);
* ideal_throughput = sum over adapters of rate x mean(prompt + output) of the length distribution;
* offered_throughput = tokens (prompt + output) of the requests that arrived in the window / duration_s;
  starved = total_throughput < 0.9 x min(ideal_throughput, offered_throughput) (the paper's rule, without
  the arrivals' luck: `adaptwin.rules.starvation_bar`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adaptwin.rules import is_starved, starvation_bar


def weighted_percentile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """``np.percentile(np.repeat(values, counts), q)`` (linear method) without expanding the repeats."""
    keep = counts > 0
    values, counts = values[keep], counts[keep]
    if values.size == 0:
        return 0.0
    order = np.argsort(values, kind="stable")
    values, counts = values[order], counts[order]
    cum = np.cumsum(counts)
    pos = q / 100.0 * (cum[-1] - 1)
    lo, frac = int(np.floor(pos)), pos - np.floor(pos)
    i = int(np.searchsorted(cum, lo, side="right"))
    j = int(np.searchsorted(cum, lo + 1, side="right")) if frac > 0 else i
    return float(values[i] + frac * (values[j] - values[i]))


def step_durations(starts: np.ndarray, ks: np.ndarray, d0: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Duration of every engine step from segments of k steps lasting d0 + beta * j (j = 0..k-1)."""
    offsets = np.arange(int(ks.sum())) - np.repeat(np.cumsum(ks) - ks, ks)
    return np.repeat(d0, ks) + np.repeat(beta, ks) * offsets


def itl_pairs(durations: np.ndarray, run_starts: list[int], run_ends: list[int]) -> np.ndarray:
    """How many finished requests had a gap in each step (from their inclusive step ranges)."""
    diff = np.zeros(len(durations) + 1, dtype=np.int64)
    np.add.at(diff, np.asarray(run_starts, dtype=np.int64), 1)
    np.add.at(diff, np.asarray(run_ends, dtype=np.int64) + 1, -1)
    return np.cumsum(diff)[:-1]


def summarize(
    *,
    duration: float,
    arrived: int,
    finished: int,
    prompt_tokens: int,
    output_tokens: int,
    ttft: list[float],
    itl_values: np.ndarray,
    itl_counts: np.ndarray,
    busy_integral: float,
    ideal: float,
    offered: float | None = None,
) -> dict[str, Any]:
    """The contract keys of `adaptwin.twin.simulate` (except memory_error, wall_time_s and counters)."""
    ttft_arr = np.asarray(ttft, dtype=np.float64) * 1000.0
    n_itl = int(itl_counts.sum())
    itl_mean = float((itl_values * itl_counts).sum() / n_itl) * 1000.0 if n_itl else 0.0
    total = (prompt_tokens + output_tokens) / duration
    return {
        "total_throughput": total,
        "input_throughput": prompt_tokens / duration,
        "output_throughput": output_tokens / duration,
        "request_throughput": finished / duration,
        "arrived_requests": int(arrived),
        "finished_requests": int(finished),
        "ttft_mean_ms": float(ttft_arr.mean()) if ttft_arr.size else 0.0,
        "ttft_median_ms": float(np.median(ttft_arr)) if ttft_arr.size else 0.0,
        "ttft_p99_ms": float(np.percentile(ttft_arr, 99)) if ttft_arr.size else 0.0,
        "itl_mean_ms": itl_mean,
        "itl_median_ms": weighted_percentile(itl_values, itl_counts, 50) * 1000.0,
        "itl_p99_ms": weighted_percentile(itl_values, itl_counts, 99) * 1000.0,
        "mean_batch_size": busy_integral / duration,
        "ideal_throughput": ideal,
        "offered_throughput": ideal if offered is None else offered,
        "starved": is_starved(total, starvation_bar(ideal, offered)),
    }


def empty_result(ideal: float, arrived: int) -> dict[str, Any]:
    """Outputs of a server that never started (memory error): nothing is served."""
    out = summarize(
        duration=1.0, arrived=arrived, finished=0, prompt_tokens=0, output_tokens=0, ttft=[],
        itl_values=np.zeros(0), itl_counts=np.zeros(0, dtype=np.int64), busy_integral=0.0, ideal=ideal,
    )
    return out
