"""The latency variant (the paper's ProposedLat): the GPU count is fixed, adapters are spread to minimise the
predicted inter-token latency while every GPU stays safe.

Why: the proposed greedy packs each GPU up to the edge of starvation, which is cheapest in GPUs but puts the
batches (and so the ITL) at their largest. Given the same number of GPUs, spreading the load lowers ITL at no
extra cost. Method: adapters in the greedy's rank order but by decreasing rate inside a rank (heaviest first,
as in longest-processing-time scheduling); each goes to the GPU where, with the A_max that minimises ITL among
safe choices, the predicted ITL after adding it is lowest (one surrogate call per adapter for every GPU and
every A_max, features from running sums); the final groups are re-tuned to their safe A_max of lowest
predicted ITL. If some adapter fits safely nowhere (spreading large ranks raises every GPU's S_max and eats KV cache),
the spread is abandoned for a local search from the greedy's own groups (`rebalance`): repeatedly move the
adapter that most lowers the worse of the two ITLs from the GPU of highest predicted ITL to the one of lowest,
while both stay safe. Both paths end feasible, so the variant never does worse than the greedy.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import polars as pl

from adaptwin.placement.core import Evaluator, Gpu, GroupStats, stats_features, with_member
from adaptwin.placement.greedy import configure


def heaviest_first(ranks: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Row indices by rank descending, then rate descending (ties by row index)."""
    return np.lexsort((np.arange(len(rates)), -rates, -ranks))


def place_latency(workload: pl.DataFrame, ev: Evaluator, greedy_gpus: list[Gpu]) -> list[Gpu]:
    """Spread over ``len(greedy_gpus)`` GPUs minimising predicted ITL; fall back to re-tuned greedy groups."""
    ranks = workload["rank"].to_numpy()
    rates = workload["rate"].to_numpy().astype(float)
    count = len(greedy_gpus)
    groups: list[list[int]] = [[] for _ in range(count)]
    stats = GroupStats.empty(count)
    for i in heaviest_first(ranks, rates):
        g = _best_gpu(stats, groups, int(i), ranks, rates, ev)
        if g is None:
            return rebalance(workload, ev, [list(gpu.members) for gpu in greedy_gpus])
        groups[g].append(int(i))
        stats.add(g, ranks[i], rates[i])
    return retune(workload, ev, [members for members in groups if members])


def _best_gpu(stats: GroupStats, groups: list[list[int]], i: int, ranks: np.ndarray, rates: np.ndarray,
              ev: Evaluator) -> int | None:
    """The GPU of lowest predicted ITL with adapter ``i`` added (at its best safe A_max), or None if no GPU
    stays safe. Empty GPUs are interchangeable: only the first is tried."""
    room = stats.count < ev.max_served
    used = np.flatnonzero(room & (stats.count > 0))
    empty = np.flatnonzero(room & (stats.count == 0))[:1]
    candidates = np.concatenate([used, empty]).astype(np.int64)
    if len(candidates) == 0:
        return None
    s_max = np.maximum(stats.max_rank[candidates], ranks[i]).astype(int)
    options = [ev.a_max_options(int(n) + 1, int(r)) for n, r in zip(stats.count[candidates], s_max, strict=True)]
    res = ev.evaluate_features(stats.with_adapter(candidates, ranks[i], rates[i]), options,
                               sets=partial(with_member, groups, candidates, i, ranks, rates))
    safe = np.flatnonzero(res["ok"])
    if len(safe) == 0:
        return None
    row = int(safe[np.lexsort((res["a_max"][safe], res["itl_mean_ms"][safe]))[0]])
    return int(candidates[res["set"][row]])


def retune(workload: pl.DataFrame, ev: Evaluator, groups: list[list[int]]) -> list[Gpu]:
    """Fixed groups, each with the safe A_max of lowest predicted ITL (highest throughput if none is safe)."""
    ranks = workload["rank"].to_numpy()
    rates = workload["rate"].to_numpy().astype(float)
    return configure(groups, ranks, rates, ev, prefer="itl")


def _best_itl(res: dict[str, np.ndarray], sets: int) -> tuple[np.ndarray, np.ndarray]:
    """Per set: lowest predicted ITL among safe A_max values (inf if none) and that A_max."""
    itl = np.full(sets, np.inf)
    max_loras = np.zeros(sets, dtype=np.int64)
    for row in np.flatnonzero(res["ok"]):
        j = res["set"][row]
        if res["itl_mean_ms"][row] < itl[j]:
            itl[j], max_loras[j] = res["itl_mean_ms"][row], res["a_max"][row]
    return itl, max_loras


def rebalance(workload: pl.DataFrame, ev: Evaluator, groups: list[list[int]], max_moves: int = 200) -> list[Gpu]:
    """Local search from feasible ``groups``: move one adapter at a time from the GPU of highest predicted ITL
    to the GPU of lowest while that lowers the higher of their two ITLs and both stay safe."""
    ranks = workload["rank"].to_numpy().astype(float)
    rates = workload["rate"].to_numpy().astype(float)
    groups = [list(g) for g in groups]
    current = retune(workload, ev, groups)
    itl = np.array([g.predicted["itl_mean_ms"] for g in current])
    for _ in range(max_moves if len(groups) > 1 else 0):
        hi, lo = int(np.argmax(itl)), int(np.argmin(itl))
        move = _best_move(groups[hi], groups[lo], ranks, rates, ev)
        if move is None or move[1] >= itl[hi] - 1e-9:
            break
        j = move[0]
        groups[lo].append(groups[hi].pop(j))
        for g in (hi, lo):
            current[g] = retune(workload, ev, [groups[g]])[0]
            itl[g] = current[g].predicted["itl_mean_ms"]
    return current


def _best_move(src: list[int], dst: list[int], ranks: np.ndarray, rates: np.ndarray, ev: Evaluator):
    """(position in ``src``, resulting max ITL) of the best single move src -> dst, or None."""
    if len(src) < 2 or len(dst) >= ev.max_served:
        return None
    m = np.asarray(src)
    r, q = ranks[m], rates[m]
    top = np.sort(r)[::-1]
    max_without = np.where((r < top[0]) | (np.sum(r == top[0]) > 1), top[0], top[1] if len(top) > 1 else top[0])
    n = len(m)
    minus = stats_features(np.full(n, n - 1), q.sum() - q, (q**2).sum() - q**2, r.sum() - r, (r**2).sum() - r**2,
                           max_without)
    d = np.asarray(dst)
    plus = stats_features(np.full(n, len(d) + 1), rates[d].sum() + q, (rates[d] ** 2).sum() + q**2,
                          ranks[d].sum() + r, (ranks[d] ** 2).sum() + r**2, np.maximum(ranks[d].max(), r))
    feats = {k: np.concatenate([minus[k], plus[k]]) for k in minus}
    options = [ev.a_max_options(int(c), int(s)) for c, s in zip(feats["served_adapters"], feats["max_size"], strict=True)]

    def sets() -> list[tuple[np.ndarray, np.ndarray]]:
        return ([(np.delete(r, j), np.delete(q, j)) for j in range(n)]
                + [(np.append(ranks[d], r[j]), np.append(rates[d], q[j])) for j in range(n)])

    itl, _ = _best_itl(ev.evaluate_features(feats, options, sets=sets), 2 * n)
    worse = np.maximum(itl[:n], itl[n:])
    j = int(np.argmin(worse))
    return None if not np.isfinite(worse[j]) else (j, float(worse[j]))
