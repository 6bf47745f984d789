"""The proposed greedy placement (the paper's Algorithm 1) and its ``fast`` variant.

Algorithm 1 (Agulló et al., "A Data-driven ML Approach for Maximizing Performance in LLM-Adapter Serving",
arXiv:2508.08343), as the paper states it:
1. group adapters by rank, largest rank first (so a GPU's S_max is the rank of its first adapter and smaller
   adapters fill in behind it);
2. order each group by rate, alternating largest / smallest (keeps each GPU's rate mix balanced);
3. fill one GPU at a time: add the next adapter; walk A_max up the grid {8, 16, ..., 576} while the predicted
   throughput of the next A_max beats the current one, never above the memory cap for the GPU's S_max (the
   calibrated KV cache must still hold one max-length sequence) nor above the adapters served;
4. ask the starvation classifier; on predicted starvation roll back the pending adapter (the one just added)
   and open a new GPU with it (here, first: move up to a safe larger A_max if the memory cap allows one).
Beyond the paper (``extensions``, on by default; off = Algorithm 1 as published): (a) "starvation" is the
`Evaluator`'s safety rule, classifier plus an uncertainty margin on the predicted throughput, so a GPU the
surrogate calls safe stays safe when the twin re-simulates it; (b) before a rollback, move up to a safe larger
A_max if one exists (more slots cure swap-induced starvation); (c) patience: a GPU closes only after
`PATIENCE` unsafe prefixes in a row, since the surrogate's verdicts are noisy near the boundary and only the
final GPU matters (also before the first safe prefix: a verdict on one light adapter is the noisiest); (d) a
*top-up* when a GPU is closed: its remaining headroom is filled with the smallest-rate adapters still waiting
(next-fit alone closes a GPU whenever the next adapter in the alternating order is a large one; first-fit
baselines would otherwise beat it by reusing that headroom);
(e) consolidation (`drain`): the least-loaded GPU is emptied into the others (merged whole into one, else
adapter by adapter) while they stay safe.
(The margin applies in both modes.)

Exactness with speed: the walk is sequential, but its inputs are not: for a GPU starting at adapter ``s`` every
prefix ``order[s:s+k]`` is a candidate set. We evaluate a block of prefixes (and only the A_max values the walk
can still reach) in one surrogate call, then replay the walk on the predictions; a block that ends without
starvation is followed by one twice as large. The result is exactly the one-adapter-at-a-time algorithm.

The ``fast`` variant (for very large workloads) assumes safety is monotone in the prefix length and picks, for
each probed prefix, the A_max of highest predicted throughput; it brackets the longest safe prefix with a dozen
probes per surrogate call (a few calls per GPU instead of one row block per adapter). With the extensions, an
unsafe prefix shorter than the shortest safe one does not bound the bracket (the same reason as the patience).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import polars as pl

from adaptwin.placement.core import Evaluator, Gpu, GroupStats, PlacementError, make_gpu, with_member

PROBES = 12  # prefixes per surrogate call in the fast variant
PATIENCE = 8  # unsafe prefixes in a row before the exact walk closes a GPU (with extensions)
DRAIN_TRIES = 3  # GPUs that could not be emptied before consolidation stops
DRAIN_MOVES = 48  # largest GPU emptied adapter by adapter (one surrogate call each); larger ones only merge whole


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
                 extensions: bool = True) -> tuple[list[Gpu], list[int]]:
    """GPUs of the proposed placement, and the indices of GPUs holding one adapter too busy for any GPU.

    ``extensions`` (beyond the paper; False = Algorithm 1 as published): escape to a safe larger A_max before
    rolling back, `PATIENCE` (a GPU closes only after that many unsafe prefixes in a row: the surrogate's
    verdicts are noisy near the boundary and the final GPU is what counts), and the top-up of a closed GPU's
    headroom with the smallest-rate adapters still waiting (rank <= its S_max by the rank order)."""
    ranks = workload["rank"].to_numpy()
    rates = workload["rate"].to_numpy().astype(float)
    seq = rank_order(ranks, rates)
    gpus: list[Gpu] = []
    overloaded: list[int] = []
    guess = 32
    fill = _fill_fast if fast else _fill_exact
    while len(seq):
        gpu, safe = fill(seq, ranks, rates, ev, guess, extensions)
        seq = seq[len(gpu.members):]
        if not safe:
            overloaded.append(len(gpus))
        elif extensions and len(seq):
            gpu, seq = _top_up(gpu, seq, ranks, rates, ev)
        gpus.append(gpu)
        guess = len(gpu.members) + 8
    if extensions:
        gpus, overloaded = drain(gpus, overloaded, ranks, rates, ev)
        gpus = settle_a_max(gpus, ranks, rates, ev)
    return gpus, overloaded


def settle_a_max(gpus: list[Gpu], ranks: np.ndarray, rates: np.ndarray, ev: Evaluator) -> list[Gpu]:
    """Final A_max of each GPU (beyond the paper): among its safe A_max values whose predicted throughput is
    within the surrogate's error (``ev.margin``) of the best safe one, the one of lowest starvation probability.

    Why: the walk climbs on predicted throughput, but differences smaller than the surrogate's error are noise,
    while the cost of too few slots is not: requests of adapters without a slot wait, and a GPU packed near
    capacity on 8 slots starves where 16 or 32 serve it (the twin shows this on Azure x10 workloads). More slots
    only cost memory (already capped) and some ITL. The members of every GPU stay as they are."""
    if not gpus:
        return gpus
    groups = [list(g.members) for g in gpus]
    options = [ev.a_max_options(len(g), int(ranks[g].max())) for g in groups]
    res = ev.evaluate([(ranks[g], rates[g]) for g in groups], options)
    out = []
    for j, (gpu, members) in enumerate(zip(gpus, groups, strict=True)):
        rows = np.flatnonzero(res["set"] == j)
        safe = rows[res["ok"][rows]]
        if not gpu.safe or not len(safe):
            out.append(gpu)
            continue
        best = res["total_throughput"][safe].max()
        near = safe[res["total_throughput"][safe] >= (1.0 - ev.margin) * best]
        row = int(near[np.argmin(res["starvation_probability"][near])])
        out.append(make_gpu(members, int(res["a_max"][row]), gpu.max_lora_rank, res, row))
    return out


def split_heavy(workload: pl.DataFrame, ev: Evaluator, max_shares: int = 64,
                keep_whole: frozenset[int] = frozenset()) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Replicate adapters too busy for one GPU (beyond the paper): an adapter that is unsafe alone on a GPU is
    split into the fewest equal shares (at most ``max_shares``) each safe alone; each share is a row of the
    returned workload with rate / shares. Returns (expanded workload, original row of each expanded row,
    share of each expanded row). vLLM serves one adapter from several GPUs when the router spreads its
    requests over them (routing.csv lists the adapter once per GPU); without this, such an adapter starves
    whatever GPU it is put on. Rows in ``keep_whole`` are never split (the twin found them safe alone, see
    `adaptwin.placement.repair.repair_splits`)."""
    ranks = workload["rank"].to_numpy()
    rates = workload["rate"].to_numpy().astype(float)
    counts = np.ones(len(rates), dtype=np.int64)
    alone = ev.evaluate([(ranks[i:i + 1], rates[i:i + 1]) for i in range(len(rates))],
                        [ev.a_max_options(1, int(r)) for r in ranks])
    heavy = [i for i in (int(alone["set"][r]) for r in np.flatnonzero(~alone["ok"])) if i not in keep_whole]
    if heavy:
        ks = np.arange(2, max_shares + 1)
        res = ev.evaluate([(np.repeat(ranks[i], 1), np.array([rates[i] / k])) for i in heavy for k in ks],
                          [ev.a_max_options(1, int(ranks[i])) for i in heavy for _ in ks])
        ok = np.zeros(len(heavy) * len(ks), dtype=bool)
        ok[res["set"][res["ok"]]] = True
        for h, i in enumerate(heavy):
            fits = np.flatnonzero(ok[h * len(ks):(h + 1) * len(ks)])
            counts[i] = int(ks[fits[0]]) if len(fits) else max_shares
    return expand(workload, counts)


def expand(workload: pl.DataFrame, counts: np.ndarray) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Each row of ``workload`` as ``counts[row]`` equal shares: (expanded workload, original row of each
    expanded row, share of each expanded row), as `split_heavy` returns them."""
    origin = np.repeat(np.arange(workload.height), counts)
    share = 1.0 / counts[origin]
    expanded = workload[origin.tolist()].with_columns(pl.col("rate") * pl.Series(share, dtype=pl.Float64))
    return expanded, origin, share


def collapse(gpus: list[Gpu], origin: np.ndarray, share: np.ndarray) -> list[Gpu]:
    """GPUs over the expanded workload of `split_heavy` mapped back to original rows: shares of one adapter
    on the same GPU are summed; ``shares`` is set only when some adapter is split."""
    split = bool((share < 1.0).any())
    out = []
    for gpu in gpus:
        merged: dict[int, float] = {}
        for m in gpu.members:
            merged[int(origin[m])] = merged.get(int(origin[m]), 0.0) + float(share[m])
        shares = tuple(merged.values()) if split else ()
        max_loras = min(gpu.max_loras, len(merged))  # two shares of one adapter on a GPU take one slot
        out.append(Gpu(tuple(merged), max_loras, gpu.max_lora_rank, gpu.predicted, shares, gpu.safe))
    return out


def drain(gpus: list[Gpu], overloaded: list[int], ranks: np.ndarray, rates: np.ndarray,
          ev: Evaluator) -> tuple[list[Gpu], list[int]]:
    """Consolidation (beyond the paper): empty the least-loaded GPU, merged whole into the first GPU that stays
    safe with it, else moving its adapters one by one (heaviest first) into the first GPU that stays safe;
    repeat until `DRAIN_TRIES` GPUs could not be emptied. Next-fit leaves
    headroom on every GPU it closes; this is where a first-fit baseline would otherwise gain a GPU."""
    keep = [g for i, g in enumerate(gpus) if i not in overloaded]
    alone = [g for i, g in enumerate(gpus) if i in overloaded]
    failed: set[tuple[int, ...]] = set()
    while len(keep) > 1 and len(failed) < DRAIN_TRIES:
        loads = [float(rates[list(g.members)].sum()) if g.members not in failed else np.inf for g in keep]
        victim = int(np.argmin(loads))
        if not np.isfinite(loads[victim]):
            break
        members = list(keep[victim].members)
        groups = [list(g.members) for j, g in enumerate(keep) if j != victim]
        if _merge_whole(members, groups, ranks, rates, ev) or (
                len(members) <= DRAIN_MOVES and _move_all(members, groups, ranks, rates, ev)):
            keep = configure(groups, ranks, rates, ev)
        else:
            failed.add(keep[victim].members)
    return keep + alone, list(range(len(keep), len(keep) + len(alone)))


def _merge_whole(members: list[int], groups: list[list[int]], ranks, rates, ev: Evaluator) -> bool:
    """Merge all of ``members`` into the first of ``groups`` that is safe with them at some A_max (one
    surrogate call for every group; the merged GPU is judged as a whole, not adapter by adapter)."""
    targets = [g for g, group in enumerate(groups) if len(group) + len(members) <= ev.max_served]
    if not targets:
        return False
    merged = [np.array([*groups[g], *members]) for g in targets]
    options = [ev.a_max_options(len(m), int(ranks[m].max())) for m in merged]
    res = ev.evaluate([(ranks[m], rates[m]) for m in merged], options)
    fits = np.flatnonzero(res["ok"])
    if not len(fits):
        return False
    groups[targets[int(res["set"][fits[0]])]].extend(members)
    return True


def _move_all(members: list[int], groups: list[list[int]], ranks, rates, ev: Evaluator) -> bool:
    """Put every adapter of ``members`` into the first of ``groups`` that stays safe (in place); False if one
    fits nowhere (``groups`` is then partly modified: callers discard it)."""
    stats = GroupStats.empty(len(groups))
    for g, group in enumerate(groups):
        for i in group:
            stats.add(g, ranks[i], rates[i])
    for i in sorted(members, key=lambda m: (-rates[m], m)):
        room = np.flatnonzero(stats.count < ev.max_served)
        if not len(room):
            return False
        s_max = np.maximum(stats.max_rank[room], ranks[i]).astype(int)
        options = [ev.a_max_options(int(n) + 1, int(r)) for n, r in zip(stats.count[room], s_max, strict=True)]
        res = ev.evaluate_features(stats.with_adapter(room, ranks[i], rates[i]), options,
                                   sets=partial(with_member, groups, room, i, ranks, rates))
        fits = np.flatnonzero(res["ok"])
        if not len(fits):
            return False
        g = int(room[res["set"][fits[0]]])
        groups[g].append(int(i))
        stats.add(g, ranks[i], rates[i])
    return True


def configure(groups: list[list[int]], ranks: np.ndarray, rates: np.ndarray, ev: Evaluator,
              shares: list[list[float]] | None = None, prefer: str = "throughput") -> list[Gpu]:
    """Each group with its safe A_max of highest predicted throughput (``prefer="itl"``: of lowest predicted
    ITL), or of highest throughput if none is safe; ``shares[g]`` are the fractions of each member's rate
    routed to group g (default all 1)."""
    if prefer not in ("throughput", "itl"):
        raise PlacementError(f"configure: prefer must be 'throughput' or 'itl', got {prefer!r}")
    options = [ev.a_max_options(len(g), int(ranks[g].max())) for g in groups]
    routed = [rates[g] * np.asarray(shares[j]) if shares else rates[g] for j, g in enumerate(groups)]
    res = ev.evaluate([(ranks[g], r) for g, r in zip(groups, routed, strict=True)], options)
    gpus = []
    for j, members in enumerate(groups):
        rows = np.flatnonzero(res["set"] == j)
        safe = rows[res["ok"][rows]]
        if len(safe) and prefer == "itl":
            row = int(safe[np.argmin(res["itl_mean_ms"][safe])])
        else:
            pool = safe if len(safe) else rows
            row = int(pool[np.argmax(res["total_throughput"][pool])])
        gpus.append(make_gpu(members, int(res["a_max"][row]), int(ranks[members].max()), res, row,
                             shares[j] if shares else ()))
    return gpus


def first_gpu(workload: pl.DataFrame, ev: Evaluator) -> Gpu:
    """The first GPU the fast variant fills from ``workload`` (used for LoRAServe's operating points)."""
    ranks = workload["rank"].to_numpy()
    rates = workload["rate"].to_numpy().astype(float)
    return _fill_fast(rank_order(ranks, rates), ranks, rates, ev, 32, True)[0]


def _s_max(seq: np.ndarray, ranks: np.ndarray, ev: Evaluator) -> int:
    s_max = int(ranks[seq[0]])
    if ev.memory_cap(s_max) <= 0:
        raise PlacementError(f"no A_max fits in memory at S_max={s_max}: rank {s_max} cannot be served")
    return s_max


def _fill_exact(seq: np.ndarray, ranks, rates, ev: Evaluator, guess: int, extensions: bool) -> tuple[Gpu, bool]:
    """One GPU by Algorithm 1 from the head of ``seq``, evaluating prefixes in blocks (module docstring)."""
    s_max = _s_max(seq, ranks, ev)
    kmax = min(len(seq), ev.max_served)
    patience = PATIENCE if extensions else 0
    misses = 0
    a_cur: int | None = None
    last: tuple | None = None  # (k, A_max, evaluation, row) of the last safe state
    lone: Gpu | None = None  # the first adapter alone, when even that is unsafe
    lo, block = 1, max(1, guess)
    while lo <= kmax:
        ks = list(range(lo, min(kmax, lo + block - 1) + 1))
        options = [_reachable(ev.a_max_options(k, s_max), a_cur) for k in ks]
        head = seq[: ks[-1]]
        res = ev.evaluate_prefixes(ranks[head], rates[head], ks, options)
        first = 0
        for j, k in enumerate(ks):
            rows = np.arange(first, first + len(options[j]))
            first += len(options[j])
            row = _climb(res["a_max"][rows], res["total_throughput"][rows], a_cur) + rows[0]
            if extensions and not res["ok"][row]:
                row = _escape(rows, row, res)
            a_cur = int(res["a_max"][row])
            if not res["ok"][row]:
                if k == 1:
                    lone = make_gpu(seq[:1], a_cur, s_max, res, row)
                misses += 1
                if misses > patience or k == kmax:
                    if last is None:  # no prefix is safe: the first adapter gets a GPU of its own
                        return lone, False
                    return make_gpu(seq[: last[0]], last[1], s_max, last[2], last[3]), True
                continue
            last, misses = (k, a_cur, res, row), 0
        lo, block = ks[-1] + 1, block * 2
    assert last is not None
    return make_gpu(seq[: last[0]], last[1], s_max, last[2], last[3]), True


def _escape(rows: np.ndarray, row: int, res: dict[str, np.ndarray]) -> int:
    """Before rolling back: the safe A_max above the climbed one with the highest predicted throughput (more
    slots cure swap-induced starvation even when the throughput comparison did not ask for them), else
    ``row`` unchanged."""
    above = rows[(rows > row) & res["ok"][rows]]
    return int(above[np.argmax(res["total_throughput"][above])]) if len(above) else row


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


def _fill_fast(seq: np.ndarray, ranks, rates, ev: Evaluator, guess: int, extensions: bool) -> tuple[Gpu, bool]:
    """One GPU: the longest safe prefix of ``seq`` found by bracketing (module docstring)."""
    s_max = _s_max(seq, ranks, ev)
    extra = seq[: min(len(seq), ev.max_served)]
    gpu, unsafe_first = _longest_safe(seq[:0], extra, s_max, ranks, rates, ev, guess, tolerant=extensions)
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
    bigger, _ = _longest_safe(base, smallest, gpu.max_lora_rank, ranks, rates, ev, 4, tolerant=True)
    if bigger is None:
        return gpu, seq
    taken = np.asarray(bigger.members[len(base):], dtype=np.int64)
    return bigger, seq[~np.isin(seq, taken)]


def _longest_safe(base: np.ndarray, extra: np.ndarray, s_max: int, ranks, rates, ev: Evaluator,
                  guess: int, tolerant: bool = False) -> tuple[Gpu | None, Gpu | None]:
    """(GPU of ``base`` + the longest safe prefix of ``extra`` with at least one extra, or None; the GPU of
    ``base`` + the first extra if that is unsafe). Each probe takes the A_max of highest predicted throughput;
    prefixes are bracketed with `PROBES` per surrogate call, assuming safety falls with the prefix length.

    ``tolerant``: an unsafe prefix shorter than the shortest safe one does not bound the search. Why: a
    surrogate's verdict on one or two light adapters is its noisiest (their throughput is Poisson luck), and
    one such verdict at k = 1 used to end the search there, so every adapter of a workload got a GPU of its
    own although every longer prefix was safe. Only the GPU built is deployed, and it is a safe prefix."""
    safe: dict[int, Gpu] = {}
    unsafe: dict[int, Gpu] = {}
    bad = len(extra) + 1
    ks = _first_probes(len(extra), guess)
    whole = np.concatenate([base, extra])
    while ks:
        members = [whole[: len(base) + k] for k in ks]
        options = [ev.a_max_options(len(m), s_max) for m in members]
        res = ev.evaluate_prefixes(ranks[whole], rates[whole], [len(m) for m in members], options)
        for j, k in enumerate(ks):
            rows = np.flatnonzero(res["set"] == j)
            row = int(rows[int(np.argmax(res["total_throughput"][rows]))])
            gpu = make_gpu(members[j], int(res["a_max"][row]), s_max, res, row)
            (safe if res["ok"][row] else unsafe)[k] = gpu
        shortest_safe = min(safe, default=None) if tolerant else None
        bad = min([bad, *(k for k in unsafe if shortest_safe is None or k > shortest_safe)])
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
    res = ev.evaluate_prefixes(ranks[seq], rates[seq], ks, options)
    a_cur: int | None = None
    first = 0
    for opts in options:
        rows = np.arange(first, first + len(opts))
        first += len(opts)
        a_cur = int(res["a_max"][_climb(res["a_max"][rows], res["total_throughput"][rows], a_cur) + rows[0]])
    assert a_cur is not None
    return a_cur
