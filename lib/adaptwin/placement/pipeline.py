"""The placement sequence, in one place: the surrogate's proposal (split heavy adapters, pack, the latency
variant's spread, collapse the shares: `api.place`), then the twin in the loop (unsplit, repair, shrink:
`shrink.repair_and_shrink`), then the sanity fallback to a baseline as safe on fewer GPUs, then each GPU's
twin verdict. `Options` says which of the later steps run.

Why one function: ``adaptwin place`` and the placement stage run the same sequence with different steps on
(the command checks every method's answer and records verdicts; the stage repairs the proposed methods and
verifies everything afterwards with another seed); written twice, the two copies drifted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import polars as pl

from adaptwin.placement import repair
from adaptwin.placement.api import TWIN_DURATION_S, Context, adapter_bound, place
from adaptwin.placement.core import Placement
from adaptwin.placement.methods import BASELINES, FAST_BASELINES, PROPOSED
from adaptwin.placement.shrink import repair_and_shrink


@dataclass(frozen=True)
class Options:
    """Which steps follow the proposal, and the twin's window and processes for them.

    ``repair``: the twin checks, repairs and shrinks the proposal. ``fallback``: a baseline on fewer GPUs
    replaces the answer when it is as safe, judged by the ``"surrogate"`` (quick baselines) or the ``"twin"``
    (every baseline), or never (None). ``verdicts``: record each GPU's twin verdict. ``label``: record whether
    the answer was verified and the adapter bound (what the command writes)."""

    repair: bool = True
    fallback: Literal["surrogate", "twin"] | None = None
    verdicts: bool = False
    label: bool = False
    duration_s: float = TWIN_DURATION_S
    workers: int = 2

    @classmethod
    def fast(cls) -> Options:
        """The command with ``--fast``: the surrogate's answer, compared with the quick baselines, unverified."""
        return cls(repair=False, fallback="surrogate", label=True)

    @classmethod
    def verified(cls, duration_s: float = TWIN_DURATION_S, workers: int = 2) -> Options:
        """The command's default: repaired and shrunk by the twin, compared with every baseline the twin
        passes, each GPU's verdict recorded."""
        return cls(repair=True, fallback="twin", verdicts=True, label=True, duration_s=duration_s, workers=workers)


def run(workload: pl.DataFrame, context: Context, method: str = PROPOSED, options: Options = Options(), *,
        cache: dict[str, dict[str, Any]] | None = None, calibration: Any = None) -> Placement:
    """``workload`` placed by ``method`` through the steps ``options`` turns on. ``cache`` holds twin checks
    shared across calls (same calibration and window); ``calibration`` is the twin's (default: the context's)."""
    cache = {} if cache is None else cache
    calibration = context.evaluator.calibration if calibration is None else calibration
    placement = place(workload, context, method)
    if options.repair:
        placement = repair_and_shrink(placement, lambda keep: place(workload, context, method, keep_whole=keep),
                                      context.evaluator, calibration, options.duration_s, options.workers, cache)
    if options.fallback == "surrogate":
        placement = fewer_predicted_safe(placement, workload, context, method)
    elif options.fallback == "twin":
        placement = fewer_passing(placement, workload, context, method, options.duration_s, options.workers, cache)
    notes = placement.notes
    if options.verdicts:
        notes = replace(notes, twin=repair.verdicts(placement, calibration, options.duration_s, options.workers,
                                                    cache),
                        twin_window_s=options.duration_s, twin_pass_ratio=repair.PASS_RATIO)
    if options.label:
        notes = replace(notes, verified=options.verdicts, adapter_bound_gpus=adapter_bound(workload, context))
    return replace(placement, notes=notes)


def fewer_predicted_safe(chosen: Placement, workload: pl.DataFrame, context: Context, method: str) -> Placement:
    """``chosen``, or the quick baseline (`FAST_BASELINES`) on the fewest GPUs among those the surrogate
    predicts safe on fewer GPUs than ``chosen``."""
    others = [place(workload, context, m) for m in FAST_BASELINES if m != method]
    safe = [o for o in others if o.num_gpus < chosen.num_gpus and all(g.safe for g in o.gpus)]
    if safe:
        return _as_fallback(min(safe, key=lambda o: o.num_gpus), chosen, "predicted safe by the surrogate")
    return chosen


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


def _as_fallback(other: Placement, chosen: Placement, how: str) -> Placement:
    """``other`` (a baseline) standing in for ``chosen``, its notes saying why."""
    why = (f"{chosen.method} used {chosen.num_gpus} GPUs where {other.method}, {how}, uses {other.num_gpus}; "
           f"returned the {other.method} placement")
    notes = replace(chosen.notes.merged(other.notes), sanity_bound=why, fallback_method=other.method)
    return replace(other, method=chosen.method, placement_time_s=chosen.placement_time_s + other.placement_time_s,
                   notes=notes)
