"""The placement an operator gets: twin-verified by default, or the surrogate's answer labelled unverified.

Why: the surrogate alone said "0 predicted unsafe" for placements whose GPUs the twin then starved (71 % of the
offered load, 54 s mean TTFT). So `place_verified` runs the twin-in-the-loop step (`shrink.repair_and_shrink`:
check every GPU, repair the failures, shrink to the fewest GPUs the twin passes) and records, per GPU, the
twin's verdict with the seed and window it was simulated with; `place_fast` returns the surrogate's proposal
and says it is unverified.

Sanity bound (both): no answer uses more GPUs than a baseline that is as safe. For a fast placement the
quick baselines (`FAST_BASELINES`), judged by the surrogate; for a verified one every baseline (`BASELINES`) on fewer GPUs is
simulated too, fewest first, and the first whose GPUs all pass the twin replaces the answer. The answer
then says so in ``notes["sanity_bound"]``. `adaptwin.placement.api.place` already caps a greedy's split of
each adapter at the shares its own load needs, so no placement exceeds `api.adapter_bound`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import polars as pl

from adaptwin.placement import repair, verify
from adaptwin.placement.api import TWIN_DURATION_S, Context, adapter_bound, place
from adaptwin.placement.core import Placement

#: methods a verified placement is compared with, at equal safety (every GPU passes the twin)
BASELINES: tuple[str, ...] = ("round-robin", "dlora", "ffd", "loraserve")
#: the baselines a fast placement is compared with: those placing 1,000 adapters in well under a second
#: (FFD makes one surrogate call per adapter: 18 s there)
FAST_BASELINES: tuple[str, ...] = ("round-robin", "dlora", "loraserve")


def place_fast(workload: pl.DataFrame, context: Context, method: str = "greedy") -> Placement:
    """The surrogate's placement, unverified; replaced by the baseline (`FAST_BASELINES`) on the fewest GPUs
    among those the surrogate predicts safe on fewer GPUs than the proposal."""
    proposal = place(workload, context, method)
    others = [place(workload, context, m) for m in FAST_BASELINES if m != method]
    safe = [o for o in others if o.num_gpus < proposal.num_gpus and all(g.safe for g in o.gpus)]
    if safe:
        proposal = _as_fallback(min(safe, key=lambda o: o.num_gpus), proposal, "predicted safe by the surrogate")
    notes = {**proposal.notes, "verified": False, "adapter_bound_gpus": adapter_bound(workload, context)}
    return replace(proposal, notes=notes)


def place_verified(workload: pl.DataFrame, context: Context, method: str = "greedy",
                   duration_s: float = TWIN_DURATION_S, workers: int = 2) -> Placement:
    """The surrogate's proposal checked, repaired and shrunk by the twin (`shrink.repair_and_shrink`), with
    ``notes["twin"]`` holding each GPU's verdict (`verdicts`). A baseline replaces it when the twin passes
    every GPU of that baseline on fewer GPUs (`fewer_passing`)."""
    from adaptwin.placement.shrink import repair_and_shrink

    cache: dict[str, dict[str, Any]] = {}
    ev, calibration = context.evaluator, context.evaluator.calibration
    proposal = place(workload, context, method)
    fixed = repair_and_shrink(proposal, lambda keep: place(workload, context, method, keep_whole=keep), ev,
                              calibration, duration_s, workers, cache)
    fixed = fewer_passing(fixed, workload, context, method, duration_s, workers, cache)
    twin = verdicts(fixed, calibration, duration_s, workers, cache)
    notes = {**fixed.notes, "verified": True, "twin": twin, "twin_window_s": duration_s,
             "twin_pass_ratio": repair.PASS_RATIO, "adapter_bound_gpus": adapter_bound(workload, context)}
    return replace(fixed, notes=notes)


def fewer_passing(chosen: Placement, workload: pl.DataFrame, context: Context, method: str, duration_s: float,
                  workers: int, cache: dict[str, dict[str, Any]]) -> Placement:
    """``chosen``, or the baseline on the fewest GPUs (fewer than ``chosen``'s) whose GPUs all pass the twin:
    the surrogate-led search must never cost GPUs that a simple method saves at equal safety."""
    calibration = context.evaluator.calibration
    others = [place(workload, context, m) for m in BASELINES if m != method]
    for other in sorted((o for o in others if o.num_gpus < chosen.num_gpus), key=lambda o: o.num_gpus):
        if all(repair.check_gpus(other, other.gpus, calibration, duration_s, workers, cache)):
            return _as_fallback(other, chosen, "every GPU passed by the twin")
    return chosen


def verdicts(placement: Placement, calibration: Any, duration_s: float, workers: int,
             cache: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per GPU, the twin's verdict on the configuration written out: throughput / offered, mean TTFT and
    ITL, starved, memory error, pass (`repair.PASS_RATIO`), and the seed and window simulated. The check is
    the repair's own (same seed), so it comes from ``cache`` without simulating again."""
    scenarios = [repair._scenario(placement, gpu, duration_s) for gpu in placement.gpus]
    results = verify.simulate_unique([(s, calibration) for s in scenarios], workers, cache)
    return [_verdict(scenario, result) for scenario, result in zip(scenarios, results, strict=True)]


def from_document(doc: dict[str, Any], workload: pl.DataFrame) -> Placement:
    """The `Placement` a ``placement.json`` describes, over ``workload`` (the CSV it was placed from); an
    adapter listed on k GPUs gets an equal share 1/k on each (how the greedy splits)."""
    from collections import Counter

    from adaptwin.placement.core import Gpu

    row = {a: i for i, a in enumerate(workload["adapter_id"].to_list())}
    copies = Counter(a for g in doc["gpus"] for a in g["adapters"])
    split = any(n > 1 for n in copies.values())
    gpus = [Gpu(tuple(row[a] for a in g["adapters"]), int(g["max_loras"]), int(g["max_lora_rank"]), g["predicted"],
                tuple(1.0 / copies[a] for a in g["adapters"]) if split else ()) for g in doc["gpus"]]
    return Placement(doc["model"], doc["method"], workload, gpus, int(doc["lower_bound_gpus"]))


def recheck(placement: Placement, calibration: Any, seed_offset: int, duration_s: float = TWIN_DURATION_S,
            workers: int = 1) -> list[dict[str, Any]]:
    """`verdicts` with every GPU's content seed moved by ``seed_offset`` (0 = `verify`'s own seed; the
    verified placement was checked at `repair.REPAIR_SEED_OFFSET`): an independent sample of the same GPUs."""
    scenarios = []
    for gpu in placement.gpus:
        scenario = verify.gpu_scenario(placement, gpu, duration_s)
        scenario["seed"] = (scenario["seed"] + seed_offset) % (2**31 - 1)
        scenarios.append(scenario)
    results = verify.simulate_unique([(s, calibration) for s in scenarios], workers)
    return [_verdict(scenario, result) for scenario, result in zip(scenarios, results, strict=True)]


def _verdict(scenario: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    offered = result["ideal_throughput"]
    ratio = None if not offered or result["total_throughput"] is None else result["total_throughput"] / offered
    return {
        "throughput_tok_s": result["total_throughput"], "offered_tok_s": offered,
        "throughput_over_offered": ratio, "ttft_mean_ms": result["ttft_mean_ms"],
        "itl_mean_ms": result["itl_mean_ms"], "starved": result["starved"],
        "memory_error": result["memory_error"], "error": result["error"], "passed": repair._good(result),
        "seed": int(scenario["seed"]), "window_s": float(scenario["duration_s"]),
    }


def _as_fallback(other: Placement, chosen: Placement, how: str) -> Placement:
    """``other`` (a baseline) standing in for ``chosen``, its notes saying why."""
    why = (f"{chosen.method} used {chosen.num_gpus} GPUs where {other.method}, {how}, uses {other.num_gpus}; "
           f"returned the {other.method} placement")
    return replace(other, method=chosen.method, placement_time_s=chosen.placement_time_s + other.placement_time_s,
                   notes={**chosen.notes, **other.notes, "sanity_bound": why, "fallback_method": other.method})
