"""The placement an operator gets: twin-verified by default, or the surrogate's answer labelled unverified.

Why: the surrogate alone said "0 predicted unsafe" for placements whose GPUs the twin then starved (71 % of the
offered load, 54 s mean TTFT). So `place_verified` runs the twin-in-the-loop step (`shrink.repair_and_shrink`:
check every GPU, repair the failures, shrink to the fewest GPUs the twin passes) and records, per GPU, the
twin's verdict with the seed and window it was simulated with; `place_fast` returns the surrogate's proposal
and says it is unverified. Both are presets of `adaptwin.placement.pipeline.run`.

Sanity bound (both): no answer uses more GPUs than a baseline that is as safe. For a fast placement the
quick baselines (`FAST_BASELINES`), judged by the surrogate; for a verified one every baseline (`BASELINES`) on
fewer GPUs is simulated too, fewest first, and the first whose GPUs all pass the twin replaces the answer. The
answer then says so in ``notes.sanity_bound``. `adaptwin.placement.api.place` already caps a greedy's split of
each adapter at the shares its own load needs, so no placement exceeds `api.adapter_bound`.

A written placement can be read back (`from_document`) and simulated again with other seeds (`recheck`).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from adaptwin.placement import pipeline, repair, verify
from adaptwin.placement.api import TWIN_DURATION_S, Context
from adaptwin.placement.core import Placement
from adaptwin.placement.methods import BASELINES as BASELINES  # re-exported: what an answer is compared with
from adaptwin.placement.methods import FAST_BASELINES as FAST_BASELINES
from adaptwin.placement.methods import PROPOSED


def place_fast(workload: pl.DataFrame, context: Context, method: str = PROPOSED) -> Placement:
    """The surrogate's placement, unverified (`pipeline.Options.fast`)."""
    return pipeline.run(workload, context, method, pipeline.Options.fast())


def place_verified(workload: pl.DataFrame, context: Context, method: str = PROPOSED,
                   duration_s: float = TWIN_DURATION_S, workers: int = 2) -> Placement:
    """The surrogate's proposal checked, repaired and shrunk by the twin, with ``notes.twin`` holding each GPU's
    verdict (`pipeline.Options.verified`)."""
    return pipeline.run(workload, context, method, pipeline.Options.verified(duration_s, workers))


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
    """`repair.verdicts` with every GPU's content seed moved by ``seed_offset`` (0 = `verify`'s own seed; the
    verified placement was checked at `repair.REPAIR_SEED_OFFSET`): an independent sample of the same GPUs."""
    scenarios = []
    for gpu in placement.gpus:
        scenario = verify.gpu_scenario(placement, gpu, duration_s)
        scenario["seed"] = (scenario["seed"] + seed_offset) % (2**31 - 1)
        scenarios.append(scenario)
    results = verify.simulate_unique([(s, calibration) for s in scenarios], workers)
    return [repair.verdict(scenario, result) for scenario, result in zip(scenarios, results, strict=True)]
