"""Twin-checked shrinking (beyond the paper): after the repair, try the same adapters on fewer GPUs.

Why: the greedy fills one GPU at a time up to the surrogate's edge of safety. When the twin then fails some of
those GPUs, the repair (`adaptwin.placement.repair`) splits them, and the placement ends with GPUs that are
each well inside the safe region but more of them than the load needs (on the default grid, the largest x10
workloads came out 3 GPUs above their pre-repair count). The surrogate cannot resolve this: near the edge its
error (~5 %) is as large as the slack being reclaimed. The twin can.

Method: for a GPU count between the lower bound and one less than the repaired placement's, deal the
placement's adapters (with their routed shares, so a split adapter stays split) over that many GPUs by
longest-processing-time: heaviest routed rate first, each to the GPU with the least routed rate so far. Two
orders are tried, heaviest first overall and largest rank first then heaviest (LPT balances load; the second
keeps large ranks from arriving last on full GPUs). Each GPU is configured by the surrogate (`greedy.configure`:
its safe A_max of highest throughput; the latency variant first tries its lowest-ITL safe A_max) and simulated by the twin with the
repair's seed and bar (`repair.check_gpus`). Counts are probed up from the lower bound with doubling steps
(at most `PROBES`), then the gap below the first pass is bisected (`fewest`), so the twin runs a few deals of
loaded GPUs even when the placement is far above its bound.
The fewest GPUs that passed replace the placement; if no smaller count passes, the repaired placement is
kept, so shrinking never adds a GPU. The search assumes that fewer GPUs are no easier to pass, which holds for
LPT deals of a fixed load up to the twin's noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from adaptwin.placement import greedy, repair
from adaptwin.placement.core import Evaluator, Gpu, Placement
from adaptwin.placement.methods import prefers_itl

#: dealing orders tried at each GPU count: heaviest routed rate first; largest rank first, then heaviest
ORDERS: tuple[str, ...] = ("rate", "rank")
#: GPU counts probed up from the lower bound (bound, +1, +3, +7, +15) before shrinking gives up
PROBES = 5


def units(placement: Placement) -> list[tuple[int, float]]:
    """(workload row, share of its rate) for every adapter slot of every GPU: what a re-deal must route."""
    return [(m, gpu.share_of(i)) for gpu in placement.gpus for i, m in enumerate(gpu.members)]


def deal(placement: Placement, count: int, order: str = "rate") -> tuple[list[list[int]], list[list[float]]]:
    """``placement``'s units dealt over ``count`` GPUs by longest-processing-time (module docstring): the
    groups (workload rows) and the share of each member's rate. Shares of one row that land on the same GPU
    are merged. Deterministic: ties go to the lower GPU index and the lower row."""
    if order not in ORDERS:
        raise ValueError(f"deal: order must be one of {ORDERS}, got {order!r}")
    ranks = placement.workload["rank"].to_numpy()
    rates = placement.workload["rate"].to_numpy().astype(float)
    pieces = units(placement)
    routed = np.array([rates[m] * s for m, s in pieces])
    rows = np.array([m for m, _ in pieces])
    first = -ranks[rows] if order == "rank" else np.zeros(len(rows))
    load = np.zeros(count)
    groups: list[dict[int, float]] = [{} for _ in range(count)]
    for j in np.lexsort((rows, -routed, first)):
        g = int(np.argmin(load))
        m, share = pieces[j]
        groups[g][m] = groups[g].get(m, 0.0) + share
        load[g] += routed[j]
    kept = [d for d in groups if d]
    return [list(d) for d in kept], [list(d.values()) for d in kept]


def configured(placement: Placement, count: int, order: str, ev: Evaluator, prefer: str) -> list[Gpu]:
    """`deal` then `greedy.configure` (shares passed only when some adapter is split)."""
    groups, shares = deal(placement, count, order)
    split = any(s != 1.0 for part in shares for s in part)
    ranks = placement.workload["rank"].to_numpy()
    rates = placement.workload["rate"].to_numpy().astype(float)
    return greedy.configure(groups, ranks, rates, ev, shares if split else None, prefer=prefer)


def _preferences(prefer: str) -> tuple[str, ...]:
    """A_max choices tried per deal: the latency variant's lowest-ITL choice, then the throughput one (so it
    reaches the greedy's GPU count, with lower ITL wherever the twin allows)."""
    return ("itl", "throughput") if prefer == "itl" else (prefer,)


def fewest(low: int, high: int, passes: Callable[[int], bool], probes: int = PROBES) -> int:
    """The smallest count in [low, high) for which ``passes`` is true, else ``high`` (assumed to pass).

    Probes up from the bound, low, low+1, low+3, low+7, ... (at most ``probes`` of them), then bisects the gap
    below the first count that passes. Probing up from the bound keeps every probed GPU loaded: near-empty
    GPUs fail the twin's bar on sampling noise alone, so a search from the top can wander. If none of the
    probes passes and they stop short of ``high``, ``high`` is returned: the slack shrinking reclaims is a
    few GPUs above the bound, and a placement far above it (a smoke-profile surrogate can leave hundreds of
    GPUs over a bound of 2) is not worth thousands of twin runs."""
    failed, probe, step = low - 1, low, 1
    for _ in range(probes):
        if probe >= high:
            break
        if passes(probe):
            high = probe
            break
        failed, probe, step = probe, probe + step, step * 2
    else:
        if probe < high:
            return high
    while high - failed > 1:
        mid = (failed + high) // 2
        if passes(mid):
            high = mid
        else:
            failed = mid
    return high


def shrink(placement: Placement, ev: Evaluator, calibration: Any, duration_s: float = 1200.0, workers: int = 2,
           cache: dict[str, dict[str, Any]] | None = None, prefer: str = "throughput") -> Placement:
    """The placement on the fewest GPUs at which a dealt placement passes the twin on every GPU (`fewest`,
    from the lower bound up to ``placement``'s count); ``placement`` itself if no smaller count passes.

    Notes: ``shrunk_gpus`` (GPUs removed), ``shrink_twin_runs``; the time is added to ``repair_time_s`` (all
    twin work is reported apart from placement time)."""
    t0 = time.perf_counter()
    cache = {} if cache is None else cache
    found: dict[int, list[Gpu]] = {}
    runs = 0

    def passes(count: int) -> bool:
        nonlocal runs
        for order, how in [(o, h) for o in ORDERS for h in _preferences(prefer)]:
            gpus = configured(placement, count, order, ev, how)
            runs += len(gpus)
            if len(gpus) == count and all(repair.check_gpus(placement, gpus, calibration, duration_s, workers, cache)):
                found[count] = gpus
                return True
        return False

    count = fewest(max(1, placement.lower_bound_gpus), placement.num_gpus, passes)
    best = replace(placement, gpus=found[count]) if count in found else placement
    spent = time.perf_counter() - t0
    notes = replace(placement.notes, shrunk_gpus=placement.num_gpus - best.num_gpus, shrink_twin_runs=runs,
                    repair_time_s=float(placement.notes.repair_time_s or 0.0) + spent)
    return replace(best, notes=notes)


def repair_and_shrink(placement: Placement, replace_fn: Any, ev: Evaluator, calibration: Any,
                      duration_s: float = 1200.0, workers: int = 2, cache: dict[str, dict[str, Any]] | None = None,
                      ) -> Placement:
    """The whole twin-in-the-loop step of the proposed methods: `repair.repair_splits`, then `shrink` (the
    latency variant re-deals with the lowest-ITL safe A_max). ``replace_fn(keep_whole)`` re-places the
    workload with those rows kept whole (see `repair.repair_splits`)."""
    cache = {} if cache is None else cache
    fixed = repair.repair_splits(placement, replace_fn, ev, calibration, duration_s, workers, cache)
    prefer = "itl" if prefers_itl(placement.method) else "throughput"
    return shrink(fixed, ev, calibration, duration_s, workers, cache, prefer=prefer)
