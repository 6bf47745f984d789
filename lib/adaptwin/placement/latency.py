"""The latency variant (the paper's ProposedLat): the GPU count is fixed, adapters are spread to minimise the
predicted inter-token latency while every GPU stays safe.

Why: the proposed greedy packs each GPU up to the edge of starvation, which is cheapest in GPUs but puts the
batches (and so the ITL) at their largest. Given the same number of GPUs, spreading the load lowers ITL at no
extra cost. Method: adapters in the greedy's rank order but by decreasing rate inside a rank (heaviest first,
as in longest-processing-time scheduling); each goes to the GPU where, with the A_max that minimises ITL among
safe choices, the predicted ITL after adding it is lowest (one surrogate call per adapter for every GPU and
every A_max). If some adapter fits safely nowhere, the spread is abandoned and the greedy's own groups are kept,
each re-tuned to the safe A_max of lowest predicted ITL, so the variant never does worse than the greedy.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from adaptwin.placement.core import Evaluator, Gpu, make_gpu


def heaviest_first(ranks: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Row indices by rank descending, then rate descending (ties by row index)."""
    return np.lexsort((np.arange(len(rates)), -rates, -ranks))


def place_latency(workload: pl.DataFrame, ev: Evaluator, greedy_gpus: list[Gpu]) -> list[Gpu]:
    """Spread over ``len(greedy_gpus)`` GPUs minimising predicted ITL; fall back to re-tuned greedy groups."""
    ranks = workload["rank"].to_numpy()
    rates = workload["rate"].to_numpy().astype(float)
    count = len(greedy_gpus)
    groups: list[list[int]] = [[] for _ in range(count)]
    chosen: list[Gpu | None] = [None] * count
    for i in heaviest_first(ranks, rates):
        best = _best_gpu(groups, int(i), ranks, rates, ev)
        if best is None:
            return retune(workload, ev, [list(g.members) for g in greedy_gpus])
        g, gpu = best
        groups[g].append(int(i))
        chosen[g] = gpu
    return [gpu for gpu in chosen if gpu is not None]


def _best_gpu(groups: list[list[int]], i: int, ranks: np.ndarray, rates: np.ndarray, ev: Evaluator):
    """(GPU index, configured Gpu) of lowest predicted ITL with adapter ``i`` added, among safe choices."""
    candidates = [g for g, members in enumerate(groups) if len(members) < ev.max_served]
    # empty GPUs are interchangeable: try only the first one
    empties = [g for g in candidates if not groups[g]]
    candidates = [g for g in candidates if groups[g]] + empties[:1]
    sets, options, members = [], [], []
    for g in candidates:
        idx = np.array([*groups[g], i])
        sets.append((ranks[idx], rates[idx]))
        options.append(ev.a_max_options(len(idx), int(ranks[idx].max())))
        members.append(idx)
    res = ev.evaluate(sets, options)
    safe = np.flatnonzero(res["ok"])
    if len(safe) == 0:
        return None
    row = int(safe[np.lexsort((res["a_max"][safe], res["itl_mean_ms"][safe]))[0]])
    j = int(res["set"][row])
    s_max = int(ranks[members[j]].max())
    return candidates[j], make_gpu(members[j], int(res["a_max"][row]), s_max, res, row)


def retune(workload: pl.DataFrame, ev: Evaluator, groups: list[list[int]]) -> list[Gpu]:
    """Fixed groups, each with the safe A_max of lowest predicted ITL (highest throughput if none is safe)."""
    ranks = workload["rank"].to_numpy()
    rates = workload["rate"].to_numpy().astype(float)
    sets = [(ranks[g], rates[g]) for g in groups]
    options = [ev.a_max_options(len(g), int(ranks[g].max())) for g in groups]
    res = ev.evaluate(sets, options)
    gpus = []
    for j, members in enumerate(groups):
        rows = np.flatnonzero(res["set"] == j)
        safe = rows[res["ok"][rows]]
        if len(safe):
            row = int(safe[np.argmin(res["itl_mean_ms"][safe])])
        else:
            row = int(rows[np.argmax(res["total_throughput"][rows])])
        gpus.append(make_gpu(members, int(res["a_max"][row]), int(ranks[members].max()), res, row))
    return gpus
