"""Twin-in-the-loop repair (beyond the paper): the surrogate proposes, the twin disposes.

The greedy judges GPUs with the surrogates, which are fast but wrong by ~10 % on average and by more in corners
of the design space the training data covers thinly (hundreds of light adapters on one GPU; tens of busy
adapters on 8 slots). Before a placement is deployed, every GPU is simulated by the twin; a GPU that misses
the bar (throughput below `PASS_RATIO` x ideal, a memory error, or the twin's starvation verdict) is repaired:

1. first more slots (`more_slots`): the next larger A_max values memory allows (a GPU starving because its
   adapters queue for slots is cured without a new GPU);
2. else it is rebalanced (`rebalance`) with the most lightly loaded GPU that passed: the adapters of both are
   dealt by rate, alternately, over the two GPUs at the largest A_max memory allows (no new GPU; next-fit
   packing leaves the last GPU light, so its slack absorbs the overflow);
3. else it is split in two (`split_in_two`; adapters dealt the same way), each half configured by the
   surrogate, and both are checked in the next round.

Before that, an adapter the greedy split into shares because the surrogate rated it unsafe alone is
simulated alone at its full rate (`repair_splits`): if the twin serves it, the workload is placed again with
that adapter kept whole, repaired the same way, and the placement with fewer GPUs is kept.

The checks use a different seed from `adaptwin.placement.verify` (`REPAIR_SEED_OFFSET`) and a stricter bar
than the starvation rule (`PASS_RATIO` = 0.92 against 0.9), so the final verification remains an independent
sample of the same GPU rather than a replay of the repair's own simulation. Repair time is reported apart
from placement time: the placement-speed targets concern the surrogate-only greedy. After the repair,
`adaptwin.placement.shrink` tries the repaired placement on fewer GPUs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from adaptwin.placement import greedy, verify
from adaptwin.placement.core import Evaluator, Gpu, Placement, build_gpus
from adaptwin.rules import starvation_bar

#: a repaired GPU must reach this fraction of its ideal throughput in the twin (the starvation line is 0.9)
PASS_RATIO = 0.92
#: added to each GPU scenario's content seed, so repair and verification draw different arrivals
REPAIR_SEED_OFFSET = 1
#: larger A_max values tried per failing GPU before it is split
SLOT_STEPS = 3
MAX_ROUNDS = 6  # check-and-fix rounds; GPUs still failing in the last one are reported as unrepaired


def _scenario(placement: Placement, gpu: Gpu, duration_s: float) -> dict[str, Any]:
    """The verification scenario of ``gpu`` (`verify.gpu_scenario`) with the repair's own seed."""
    return _repair_seed(verify.gpu_scenario(placement, gpu, duration_s))


def _repair_seed(scenario: dict[str, Any]) -> dict[str, Any]:
    """``scenario`` with its content seed moved by `REPAIR_SEED_OFFSET` (in place; returned)."""
    scenario["seed"] = (scenario["seed"] + REPAIR_SEED_OFFSET) % (2**31 - 1)
    return scenario


def _good(result: dict[str, Any]) -> bool:
    """A twin row (`verify._simulate`) that passes: it starts, is not starved, and reaches `PASS_RATIO` x ideal,
    or x the tokens that arrived when fewer (`rules.starvation_bar`; a scenario the twin rejects fails)."""
    if result["error"] is not None or result["memory_error"] or result["starved"]:
        return False
    bar = starvation_bar(result["ideal_throughput"], result.get("offered_throughput"))
    return bool(result["total_throughput"] >= PASS_RATIO * bar)


def _passes(job: tuple[dict[str, Any], Any]) -> bool:
    """True when the twin serves this GPU with throughput >= `PASS_RATIO` x ideal (and it starts)."""
    return _good(verify._simulate(job))


def _check(jobs: list[tuple[dict[str, Any], Any]], workers: int, cache: dict[str, dict[str, Any]]) -> list[bool]:
    """`_passes` for every job, each distinct scenario simulated once across calls (`verify.simulate_unique`)."""
    return [_good(r) for r in verify.simulate_unique(jobs, workers, cache)]


def check_gpus(placement: Placement, gpus: list[Gpu], calibration: Any, duration_s: float, workers: int,
               cache: dict[str, dict[str, Any]]) -> list[bool]:
    """`_passes` for each of ``gpus`` (GPUs over ``placement``'s workload, in it or candidates), in one batch."""
    return _check([(_scenario(placement, g, duration_s), calibration) for g in gpus], workers, cache)


def verdicts(placement: Placement, calibration: Any, duration_s: float, workers: int,
             cache: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per GPU, the twin's verdict on the configuration written out (`verdict`). The check is the repair's
    own (same seed), so it comes from ``cache`` without simulating again."""
    scenarios = [_scenario(placement, gpu, duration_s) for gpu in placement.gpus]
    results = verify.simulate_unique([(s, calibration) for s in scenarios], workers, cache)
    return [verdict(scenario, result) for scenario, result in zip(scenarios, results, strict=True)]


def verdict(scenario: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """One GPU's twin verdict as placement.json records it: throughput / offered, mean TTFT and ITL, starved,
    memory error, pass (`PASS_RATIO`), and the seed and window simulated."""
    offered = result["ideal_throughput"]
    ratio = None if not offered or result["total_throughput"] is None else result["total_throughput"] / offered
    return {
        "throughput_tok_s": result["total_throughput"], "offered_tok_s": offered,
        "throughput_over_offered": ratio, "ttft_mean_ms": result["ttft_mean_ms"],
        "itl_mean_ms": result["itl_mean_ms"], "starved": result["starved"],
        "memory_error": result["memory_error"], "error": result["error"], "passed": _good(result),
        "seed": int(scenario["seed"]), "window_s": float(scenario["duration_s"]),
    }


def _with_more_slots(gpu: Gpu, ev: Evaluator) -> list[Gpu]:
    """The same GPU with each of the next `SLOT_STEPS` larger A_max values memory allows."""
    options = [a for a in ev.a_max_options(len(gpu.members), gpu.max_lora_rank) if a > gpu.max_loras]
    return [replace(gpu, max_loras=a) for a in options[:SLOT_STEPS]]


def _members(gpu: Gpu) -> tuple[list[int], list[float]]:
    return list(gpu.members), [gpu.share_of(i) for i in range(len(gpu.members))]


def _halves(placement: Placement, members: list[int], shares: list[float], ev: Evaluator,
            largest: bool) -> list[Gpu]:
    """Two GPUs from ``members``, dealt alternately by routed rate (heaviest first): at the largest A_max memory
    allows (`build_gpus`), or at the surrogate's choice (`greedy.configure`)."""
    rates = placement.workload["rate"].to_numpy().astype(float)
    routed = rates[members] * np.asarray(shares)
    pos = np.arange(len(members))
    order = pos[np.lexsort((pos, -routed))]
    halves = [order[0::2].tolist(), order[1::2].tolist()]
    groups = [[members[i] for i in h] for h in halves]
    parts = [[shares[i] for i in h] for h in halves] if any(x != 1.0 for x in shares) else None
    if largest:
        return build_gpus(placement.workload, ev, groups, shares=parts)
    return greedy.configure(groups, placement.workload["rank"].to_numpy(), rates, ev, parts)


def _rebalanced(placement: Placement, gpu: Gpu, partner: Gpu, ev: Evaluator) -> list[Gpu]:
    """``gpu`` and ``partner`` re-dealt over two GPUs at the largest A_max memory allows."""
    (m1, s1), (m2, s2) = _members(gpu), _members(partner)
    merged: dict[int, float] = {}
    for m, sh in zip(m1 + m2, s1 + s2, strict=True):
        merged[m] = merged.get(m, 0.0) + sh
    if len(merged) < 2:
        return []
    return _halves(placement, list(merged), list(merged.values()), ev, largest=True)


def split_rows(placement: Placement) -> list[int]:
    """Workload rows the placement serves from more than one GPU (`greedy.split_heavy` shares)."""
    seen: dict[int, int] = {}
    for gpu in placement.gpus:
        for m in gpu.members:
            seen[m] = seen.get(m, 0) + 1
    return sorted(m for m, n in seen.items() if n > 1)


def whole_is_safe(placement: Placement, rows: list[int], calibration: Any, duration_s: float = 1200.0,
                  workers: int = 2, cache: dict[str, dict[str, Any]] | None = None) -> frozenset[int]:
    """The ``rows`` the twin serves alone on one GPU (A_max 1, S_max = its rank) at their full rate: the
    surrogate saw few single adapters that busy and tends to split them when one GPU would do."""
    from adaptwin.twin.scenario import make_scenario

    jobs = []
    for r in rows:
        row = placement.workload.row(r, named=True)
        scenario = make_scenario(placement.model, [int(row["rank"])], [float(row["rate"])], 1, duration_s=duration_s)
        jobs.append((_repair_seed(scenario), calibration))
    ok = _check(jobs, workers, {} if cache is None else cache)
    return frozenset(r for r, good in zip(rows, ok, strict=True) if good)


def repair_splits(placement: Placement, replace_fn: Callable[[frozenset[int]], Placement], ev: Evaluator,
                  calibration: Any, duration_s: float = 1200.0, workers: int = 2,
                  cache: dict[str, dict[str, Any]] | None = None) -> Placement:
    """`repair`, after asking the twin about the adapters the greedy split: those it serves alone are kept
    whole and the workload is placed again (``replace_fn(keep_whole)``) and repaired; the placement with
    fewer GPUs wins (ties: the first). ``repair_time_s`` counts every twin check; ``unsplit_adapters`` the
    adapters kept whole in the returned placement."""
    t0 = time.perf_counter()
    cache = {} if cache is None else cache
    first = repair(placement, ev, calibration, duration_s, workers, cache)
    keep = whole_is_safe(placement, split_rows(placement), calibration, duration_s, workers, cache)
    best, unsplit = first, 0
    if keep:
        second = repair(replace_fn(keep), ev, calibration, duration_s, workers, cache)
        if second.num_gpus < first.num_gpus:
            best, unsplit = second, len(keep)
    notes = replace(best.notes, repair_time_s=time.perf_counter() - t0, unsplit_adapters=unsplit)
    return replace(best, notes=notes)


@dataclass
class _Repair:
    """The state one repair works on: the GPUs as repaired so far (indices stay put; a split appends), which
    of them passed, which were touched, and the batched twin check that counts its runs."""

    placement: Placement
    ev: Evaluator
    check: Callable[[list[Gpu]], list[bool]]
    gpus: list[Gpu]
    passed: set[int] = field(default_factory=set)
    repaired: set[int] = field(default_factory=set)
    unrepaired: list[int] = field(default_factory=list)


def more_slots(state: _Repair, failing: list[int]) -> list[int]:
    """Strategy 1: each failing GPU with the first of its next larger A_max values the twin passes (a GPU
    starving because its adapters queue for slots is cured without a new GPU). Returns the GPUs still failing."""
    flat = [(g, t) for g in failing for t in _with_more_slots(state.gpus[g], state.ev)]
    ok = state.check([t for _, t in flat])
    for g in failing:
        fixed = [t for (h, t), good in zip(flat, ok, strict=True) if h == g and good]
        if fixed:
            state.gpus[g] = fixed[0]
            state.passed.add(g)
    return [g for g in failing if g not in state.passed]


def rebalance(state: _Repair, failing: list[int]) -> list[int]:
    """Strategy 2: each failing GPU re-dealt with the most lightly loaded GPU that passed (each partner used
    once per round), kept when the twin passes both halves: no new GPU. Returns the GPUs still failing."""
    placement = state.placement
    loads = {g: float(placement.adapters_of(state.gpus[g])["rate"].sum()) for g in state.passed}
    pairs = []
    for g in failing:
        free = [h for h in sorted(loads, key=lambda h: (loads[h], h)) if h not in {p for _, p, _ in pairs}]
        if free:
            pairs.append((g, free[0], _rebalanced(placement, state.gpus[g], state.gpus[free[0]], state.ev)))
    pairs = [p for p in pairs if p[2]]
    ok = state.check([t for _, _, two in pairs for t in two])
    for j, (g, h, two) in enumerate(pairs):
        if ok[2 * j] and ok[2 * j + 1]:
            state.gpus[g], state.gpus[h] = two
            state.passed.add(g)
            state.repaired.add(h)
    return [g for g in failing if g not in state.passed]


def split_in_two(state: _Repair, failing: list[int]) -> list[int]:
    """Strategy 3: each failing GPU split in two, each half configured by the surrogate; a GPU of one adapter
    (or share) has nothing to split and is left unrepaired. Returns the GPUs to check in the next round."""
    pending = []
    for g in failing:
        members, shares = _members(state.gpus[g])
        if len(members) < 2:
            state.unrepaired.append(g)
            continue
        state.gpus[g], second = _halves(state.placement, members, shares, state.ev, largest=False)
        state.gpus.append(second)
        pending += [g, len(state.gpus) - 1]
    return pending


def repair(placement: Placement, ev: Evaluator, calibration: Any, duration_s: float = 1200.0,
           workers: int = 2, cache: dict[str, dict[str, Any]] | None = None) -> Placement:
    """The placement with every GPU the twin fails repaired (module docstring: `more_slots`, `rebalance`,
    `split_in_two`, in that order, for up to `MAX_ROUNDS` rounds); notes record ``repair_time_s``,
    ``repaired_gpus``, ``repair_twin_runs`` (checks asked for, cached or not) and ``unrepaired_gpus``. Pass one
    ``cache`` to many calls (same calibration and duration) to simulate each distinct GPU once: the greedy
    variants share most of their GPUs."""
    cache = {} if cache is None else cache
    t0 = time.perf_counter()
    runs = 0

    def check(cands: list[Gpu]) -> list[bool]:
        nonlocal runs
        runs += len(cands)
        return check_gpus(placement, cands, calibration, duration_s, workers, cache)

    state = _Repair(placement, ev, check, list(placement.gpus))
    pending = list(range(len(state.gpus)))  # GPUs whose current configuration has not been checked
    for round_ in range(MAX_ROUNDS):
        if not pending:
            break
        ok = check([state.gpus[g] for g in pending])
        state.passed |= {g for g, good in zip(pending, ok, strict=True) if good}
        failing = [g for g, good in zip(pending, ok, strict=True) if not good]
        if round_ == MAX_ROUNDS - 1:
            state.unrepaired = failing
            break
        state.repaired |= set(failing)
        pending = split_in_two(state, rebalance(state, more_slots(state, failing)))
    notes = replace(placement.notes, repair_time_s=time.perf_counter() - t0, repaired_gpus=len(state.repaired),
                    repair_twin_runs=runs, unrepaired_gpus=len(state.unrepaired))
    return replace(placement, gpus=state.gpus, notes=notes)
