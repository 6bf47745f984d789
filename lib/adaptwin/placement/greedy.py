"""The proposed greedy placement (the paper's Algorithm 1) and its ``fast`` variant.

Algorithm 1 (Agulló et al., "A Data-driven ML Approach for Maximizing Performance in LLM-Adapter Serving",
arXiv:2508.08343), as issue 5 states it:
1. group adapters by rank, largest rank first (so a GPU's S_max is the rank of its first adapter and smaller
   adapters fill in behind it);
2. order each group by rate, alternating largest / smallest (keeps each GPU's rate mix balanced);
3. fill one GPU at a time: add the next adapter; walk A_max up the grid {8, 16, ..., 576} while the predicted
   throughput of the next A_max beats the current one, never above the memory cap for the GPU's S_max (the
   calibrated KV cache must still hold one max-length sequence) nor above the adapters served;
4. ask the starvation classifier; on predicted starvation roll back the pending adapter (the one just added)
   and open a new GPU with it.
Beyond the paper: (a) "starvation" is the `Evaluator`'s safety rule, classifier plus an uncertainty margin on
the predicted throughput, so a GPU the surrogate calls safe stays safe when the twin re-simulates it; (b) a
*top-up* when a GPU is closed: its remaining headroom is filled with the smallest-rate adapters still waiting
(next-fit alone closes a GPU whenever the next adapter in the alternating order is a large one; first-fit
baselines would otherwise beat it by reusing that headroom).

Exactness with speed: the walk is sequential, but its inputs are not: for a GPU starting at adapter ``s`` every
prefix ``order[s:s+k]`` is a candidate set. We evaluate a block of prefixes (and only the A_max values the walk
can still reach) in one surrogate call, then replay the walk on the predictions; a block that ends without
starvation is followed by one twice as large. The result is exactly the one-adapter-at-a-time algorithm.

The ``fast`` variant (for very large workloads) assumes safety is monotone in the prefix length and picks, for
each probed prefix, the A_max of highest predicted throughput; it brackets the longest safe prefix with a dozen
probes per surrogate call (a few calls per GPU instead of one row block per adapter).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from adaptwin.placement.core import Evaluator, Gpu, PlacementError, make_gpu

PROBES = 12  # prefixes per surrogate call in the fast variant


def rank_order(ranks: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Row indices: ranks descending; inside a rank, rates alternating largest, smallest, 2nd largest, ...
    (ties broken by row index, so the order is deterministic)."""
    order: list[int] = []
    for rank in sorted(set(ranks.tolist()), reverse=True):
        idx = np.flatnonzero(ranks == rank)
        by_rate = idx[np.lexsort((idx, -rates[idx]))]
        lo, hi = 0, len(by_rate) - 1
        while lo <= hi:
            order.append(int(by_rate[lo]))
            if lo != hi:
                order.append(int(by_rate[hi]))
            lo, hi = lo + 1, hi - 1
    return np.array(order, dtype=np.int64)


def place_greedy(workload: pl.DataFrame, ev: Evaluator, fast: bool = False,
                 top_up: bool = True) -> tuple[list[Gpu], list[int]]:
    """GPUs of the proposed placement, and the indices of GPUs holding one adapter too busy for any GPU.

    ``top_up`` (beyond the paper): when a GPU is closed, fill its remaining headroom with the smallest-rate
    adapters still waiting (they have rank <= its S_max, by the rank order), so a GPU is not closed just because
    the next adapter in the alternating order happened to be a large one."""
    ranks = workload["rank"].to_numpy()
    rates = workload["rate"].to_numpy().astype(float)
    seq = rank_order(ranks, rates)
    gpus: list[Gpu] = []
    overloaded: list[int] = []
    guess = 32
    fill = _fill_fast if fast else _fill_exact
    while len(seq):
        gpu, safe = fill(seq, ranks, rates, ev, guess)
        seq = seq[len(gpu.members):]
        if not safe:
            overloaded.append(len(gpus))
        elif top_up and len(seq):
            gpu, seq = _top_up(gpu, seq, ranks, rates, ev)
        gpus.append(gpu)
        guess = len(gpu.members) + 8
    return gpus, overloaded


def _s_max(seq: np.ndarray, ranks: np.ndarray, ev: Evaluator) -> int:
    s_max = int(ranks[seq[0]])
    if ev.memory_cap(s_max) <= 0:
        raise PlacementError(f"no A_max fits in memory at S_max={s_max}: rank {s_max} cannot be served")
    return s_max


def _fill_exact(seq: np.ndarray, ranks, rates, ev: Evaluator, guess: int) -> tuple[Gpu, bool]:
    """One GPU by Algorithm 1 from the head of ``seq``, evaluating prefixes in blocks (module docstring)."""
    s_max = _s_max(seq, ranks, ev)
    kmax = min(len(seq), ev.max_served)
    a_cur: int | None = None
    last: tuple | None = None  # (k, A_max, evaluation, row) of the last safe state
    lo, block = 1, max(1, guess)
    while lo <= kmax:
        ks = list(range(lo, min(kmax, lo + block - 1) + 1))
        options = [_reachable(ev.a_max_options(k, s_max), a_cur) for k in ks]
        res = ev.evaluate([(ranks[seq[:k]], rates[seq[:k]]) for k in ks], options)
        first = 0
        for j, k in enumerate(ks):
            rows = np.arange(first, first + len(options[j]))
            first += len(options[j])
            row = _climb(res["a_max"][rows], res["total_throughput"][rows], a_cur) + rows[0]
            a_cur = int(res["a_max"][row])
            if not res["ok"][row]:
                if last is None:  # a single adapter no GPU can serve safely: it gets a GPU of its own
                    return make_gpu(seq[:1], a_cur, s_max, res, row), False
                return make_gpu(seq[: last[0]], last[1], s_max, last[2], last[3]), True
            last = (k, a_cur, res, row)
        lo, block = ks[-1] + 1, block * 2
    assert last is not None
    return make_gpu(seq[: last[0]], last[1], s_max, last[2], last[3]), True


def _reachable(options: list[int], a_cur: int | None) -> list[int]:
    """A_max values the walk can still take: the current one (or the largest below it) and everything above."""
    if a_cur is None:
        return options
    below = [a for a in options if a <= a_cur]
    floor = below[-1] if below else options[0]
    return [a for a in options if a >= floor]


def _climb(values: np.ndarray, throughput: np.ndarray, a_cur: int | None) -> int:
    """Index of the A_max the walk settles on: start at the current one, move up while the next is better."""
    pos = 0
    if a_cur is not None:
        pos = max(0, int(np.searchsorted(values, a_cur, side="right")) - 1)
    while pos + 1 < len(values) and throughput[pos + 1] > throughput[pos]:
        pos += 1
    return pos


def _fill_fast(seq: np.ndarray, ranks, rates, ev: Evaluator, guess: int) -> tuple[Gpu, bool]:
    """One GPU: the longest safe prefix of ``seq`` found by bracketing (module docstring)."""
    s_max = _s_max(seq, ranks, ev)
    extra = seq[: min(len(seq), ev.max_served)]
    gpu, unsafe_first = _longest_safe(seq[:0], extra, s_max, ranks, rates, ev, guess)
    if gpu is None:  # even one adapter is unsafe: it gets a GPU of its own
        return unsafe_first, False
    return gpu, True


def _top_up(gpu: Gpu, seq: np.ndarray, ranks, rates, ev: Evaluator) -> tuple[Gpu, np.ndarray]:
    """Add the smallest-rate waiting adapters to a closed GPU while it stays safe; returns (GPU, rest of seq)."""
    room = ev.max_served - len(gpu.members)
    if room <= 0:
        return gpu, seq
    smallest = seq[np.lexsort((np.arange(len(seq)), rates[seq]))][:room]
    base = np.asarray(gpu.members, dtype=np.int64)
    bigger, _ = _longest_safe(base, smallest, gpu.max_lora_rank, ranks, rates, ev, 4)
    if bigger is None:
        return gpu, seq
    taken = np.asarray(bigger.members[len(base):], dtype=np.int64)
    return bigger, seq[~np.isin(seq, taken)]


def _longest_safe(base: np.ndarray, extra: np.ndarray, s_max: int, ranks, rates, ev: Evaluator,
                  guess: int) -> tuple[Gpu | None, Gpu | None]:
    """(GPU of ``base`` + the longest safe prefix of ``extra`` with at least one extra, or None; the GPU of
    ``base`` + the first extra if that is unsafe). Each probe takes the A_max of highest predicted throughput;
    prefixes are bracketed with `PROBES` per surrogate call, assuming safety falls with the prefix length."""
    safe: dict[int, Gpu] = {}
    unsafe: dict[int, Gpu] = {}
    bad = len(extra) + 1
    ks = _first_probes(len(extra), guess)
    while ks:
        members = [np.concatenate([base, extra[:k]]) for k in ks]
        options = [ev.a_max_options(len(m), s_max) for m in members]
        res = ev.evaluate([(ranks[m], rates[m]) for m in members], options)
        for j, k in enumerate(ks):
            rows = np.flatnonzero(res["set"] == j)
            row = int(rows[int(np.argmax(res["total_throughput"][rows]))])
            gpu = make_gpu(members[j], int(res["a_max"][row]), s_max, res, row)
            (safe if res["ok"][row] else unsafe)[k] = gpu
        bad = min([bad, *unsafe])
        good = max([k for k in safe if k < bad], default=0)
        ks = _between(good, bad)
    good = max([k for k in safe if k < bad], default=0)
    return (safe[good], None) if good else (None, unsafe.get(1))


def _first_probes(kmax: int, guess: int) -> list[int]:
    """Prefix lengths to try first: a geometric spread over 1..kmax, denser around the previous GPU's size."""
    spread = np.geomspace(1, kmax, PROBES // 2)
    near = np.linspace(max(1, guess * 0.7), min(kmax, guess * 1.3), PROBES // 2)
    return sorted({int(round(k)) for k in np.concatenate([spread, near]) if 1 <= round(k) <= kmax})


def _between(good: int, bad: int) -> list[int]:
    """Up to `PROBES` prefix lengths strictly between the longest safe and the shortest unsafe one."""
    if bad - good <= 1:
        return []
    return sorted({int(round(k)) for k in np.linspace(good + 1, bad - 1, min(PROBES, bad - good - 1))})


def walk_a_max(ranks: np.ndarray, rates: np.ndarray, ev: Evaluator) -> int:
    """The A_max Algorithm 1's walk reaches when all of these adapters go on one GPU (no rollback): the
    proposed method's choice in the single-GPU experiment (paper's Fig. 10)."""
    seq = rank_order(ranks, rates)
    s_max = int(ranks[seq[0]])
    ks = list(range(1, len(seq) + 1))
    options = [ev.a_max_options(k, s_max) for k in ks]
    res = ev.evaluate([(ranks[seq[:k]], rates[seq[:k]]) for k in ks], options)
    a_cur: int | None = None
    first = 0
    for opts in options:
        rows = np.arange(first, first + len(opts))
        first += len(opts)
        a_cur = int(res["a_max"][_climb(res["a_max"][rows], res["total_throughput"][rows], a_cur) + rows[0]])
    assert a_cur is not None
    return a_cur
