"""Baselines, re-implemented from their papers for a static, single-model, per-adapter-rate setting.

Every baseline is judged by the same `Evaluator` as the proposed greedy (same surrogate, same safety rule, same
memory cap), so differences in GPU counts come from the packing strategy alone. What each paper does and what
we keep:

- **LoRAServe** (Jaiswal et al., "LoRAServe: Serving Heterogeneous LoRA Adapters in Distributed LLM Inference
  Systems", arXiv:2511.22880, 2025): adapters of different ranks interfere, so each rank gets its own GPUs.
  (1) *rank-aware operating points*: offline, for each rank, the per-GPU load a GPU of that rank sustains
  within its objective (here: the largest safe number of the rank's mean-rate adapters, found with the
  surrogate, and the A_max giving it); (2) *apportionment*: the total GPU count ceil(sum of load / operating
  load) is divided among ranks by largest remainders (at least one per rank present); (3) *fractional bin
  packing*: within a rank, adapters by decreasing rate fill GPUs up to an equal share of the rank's load, an
  adapter that overflows is split, its rate divided between two GPUs (routing sends it to both).
- **dLoRA** (Wu et al., "dLoRA: Dynamically Orchestrating Requests and Adapters for LoRA LLM Serving",
  OSDI 2024): the *proactive* mechanism places adapters on replicas from their expected load, balancing load
  across replicas (greedy: heaviest adapter to the least-loaded replica) with as many adapters resident as
  memory allows; replicas are added when the placement cannot serve the load. We start from the lower bound
  and add a GPU until every GPU is safe. Its reactive request/adapter migration is runtime, not placement.
- **FFD**: first-fit decreasing bin packing by rate; each adapter goes to the first open GPU that stays safe
  with the largest A_max memory allows, else a new GPU.
- **Round robin** over the minimum GPU count (the lower bound, or more if one GPU cannot serve that many
  adapters), A_max the largest memory allows, no safety check: the naive deployment.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import polars as pl

from adaptwin.placement.core import Evaluator, Gpu, GroupStats, build_gpus, with_member


# ---- first-fit decreasing ------------------------------------------------------------------------------
def place_ffd(workload: pl.DataFrame, ev: Evaluator) -> list[Gpu]:
    """First-fit decreasing by rate, A_max = the largest memory allows (one surrogate call per adapter, every
    open GPU judged in it)."""
    ranks = workload["rank"].to_numpy()
    rates = workload["rate"].to_numpy().astype(float)
    groups: list[list[int]] = []
    stats = GroupStats.empty(0)
    for i in np.lexsort((np.arange(len(rates)), -rates)):
        open_ = np.flatnonzero(stats.count < ev.max_served)
        target = None
        if len(open_):
            served = stats.count[open_].astype(int) + 1
            s_max = np.maximum(stats.max_rank[open_], ranks[i]).astype(int)
            options = [[ev.largest_a_max(int(n), int(r))] for n, r in zip(served, s_max, strict=True)]
            res = ev.evaluate_features(stats.with_adapter(open_, ranks[i], rates[i]), options,
                                       sets=partial(with_member, groups, open_, i, ranks, rates))
            fits = np.flatnonzero(res["ok"])
            target = int(open_[fits[0]]) if len(fits) else None
        if target is None:
            target = stats.grow()
            groups.append([])
        groups[target].append(int(i))
        stats.add(target, ranks[i], rates[i])
    return build_gpus(workload, ev, groups)


# ---- round robin ---------------------------------------------------------------------------------------
def place_round_robin(workload: pl.DataFrame, ev: Evaluator, min_gpus: int) -> list[Gpu]:
    """Adapters dealt in table order over ``max(min_gpus, ceil(n / max_served))`` GPUs."""
    n = workload.height
    count = min(n, max(min_gpus, math.ceil(n / ev.max_served)))
    groups = [list(range(g, n, count)) for g in range(count)]
    return build_gpus(workload, ev, groups)


# ---- dLoRA ---------------------------------------------------------------------------------------------
def balance(rates: np.ndarray, count: int, max_served: int) -> list[list[int]]:
    """dLoRA's load balancing: heaviest adapter first to the least-loaded replica with room."""
    load = np.zeros(count)
    served = np.zeros(count, dtype=np.int64)
    groups: list[list[int]] = [[] for _ in range(count)]
    for i in np.lexsort((np.arange(len(rates)), -rates)):
        room = np.flatnonzero(served < max_served)
        g = int(room[np.argmin(load[room])])
        groups[g].append(int(i))
        load[g] += rates[i]
        served[g] += 1
    return groups


def place_dlora(workload: pl.DataFrame, ev: Evaluator, min_gpus: int) -> list[Gpu]:
    """Balanced placement on the fewest GPUs (from ``min_gpus`` up) where every GPU is safe: the count grows
    by doubling steps until the balanced placement is safe, then the smallest safe count is bisected. A GPU
    left holding one adapter too busy for any GPU cannot be fixed by adding GPUs, so it does not count."""
    rates = workload["rate"].to_numpy().astype(float)
    n = workload.height
    lo = min(n, max(min_gpus, math.ceil(n / ev.max_served)))

    def attempt(count: int) -> tuple[bool, list[Gpu]]:
        gpus = build_gpus(workload, ev, balance(rates, count, ev.max_served))
        return all(g.safe or len(g.members) == 1 for g in gpus), gpus

    ok, gpus = attempt(lo)
    if ok:
        return gpus
    step, hi = 1, lo
    while not ok and hi < n:
        lo, hi = hi, min(n, hi + step)
        ok, gpus = attempt(hi)
        step *= 2
    best = gpus
    while hi - lo > 1:  # invariant: lo unsafe, hi safe (or n)
        mid = (lo + hi) // 2
        ok, gpus = attempt(mid)
        lo, hi, best = (lo, mid, gpus) if ok else (mid, hi, best)
    return best


# ---- LoRAServe -----------------------------------------------------------------------------------------
def operating_point(rank: int, mean_rate: float, ev: Evaluator) -> tuple[float, int]:
    """(requests/s one GPU of rank-``rank`` adapters sustains safely, its A_max): the largest safe count of
    mean-rate adapters, found with the proposed greedy's fast search on a homogeneous workload."""
    from adaptwin.placement.greedy import first_gpu

    probe = pl.DataFrame({"adapter_id": [f"p{i}" for i in range(ev.max_served)],
                          "rank": [rank] * ev.max_served, "rate": [mean_rate] * ev.max_served})
    first = first_gpu(probe, ev)
    return len(first.members) * mean_rate, first.max_loras


def apportion(demand: dict[int, float]) -> dict[int, int]:
    """Largest-remainder (Hamilton) apportionment of ceil(sum demand) GPUs, at least one per rank."""
    total = math.ceil(sum(demand.values()) - 1e-9)
    seats = {r: math.floor(d) for r, d in demand.items()}
    remainders = sorted(demand, key=lambda r: (-(demand[r] - seats[r]), r))
    for r in remainders[: max(0, total - sum(seats.values()))]:
        seats[r] += 1
    return {r: max(1, s) for r, s in seats.items()}


def fractional_pack(rates: np.ndarray, bins: int) -> list[list[tuple[int, float]]]:
    """Adapters by decreasing rate into ``bins`` equal-capacity bins; an overflowing adapter is split.
    Returns per bin (adapter position, share of its rate)."""
    target = rates.sum() / bins
    packed: list[list[tuple[int, float]]] = [[] for _ in range(bins)]
    b, room = 0, target
    for i in np.lexsort((np.arange(len(rates)), -rates)):
        left = 1.0
        while left > 1e-12:
            if b == bins - 1 or rates[i] * left <= room + 1e-12 or rates[i] == 0:
                packed[b].append((int(i), left))
                room -= rates[i] * left
                break
            share = room / rates[i]
            if share > 1e-9:
                packed[b].append((int(i), share))
                left -= share
            b, room = b + 1, target
    return packed


def place_loraserve(workload: pl.DataFrame, ev: Evaluator) -> list[Gpu]:
    """Rank-aware operating points, apportionment of GPUs to ranks, fractional packing within each rank."""
    ranks = workload["rank"].to_numpy()
    rates = workload["rate"].to_numpy().astype(float)
    points, demand = {}, {}
    for rank in sorted(set(ranks.tolist()), reverse=True):
        idx = np.flatnonzero(ranks == rank)
        capacity, max_loras = operating_point(rank, max(float(rates[idx].mean()), 1e-9), ev)
        points[rank] = max_loras
        demand[rank] = max(rates[idx].sum() / max(capacity, 1e-12), len(idx) / ev.max_served)
    seats = apportion(demand)
    groups, shares, max_loras_values = [], [], []
    for rank in sorted(seats, reverse=True):
        idx = np.flatnonzero(ranks == rank)
        for bin_ in fractional_pack(rates[idx], min(seats[rank], len(idx))):
            if not bin_:
                continue
            groups.append([int(idx[p]) for p, _ in bin_])
            shares.append([s for _, s in bin_])
            options = ev.a_max_options(len(bin_), rank)
            max_loras_values.append(max([a for a in options if a <= points[rank]], default=options[0]))
    return build_gpus(workload, ev, groups, max_loras_values, shares)
