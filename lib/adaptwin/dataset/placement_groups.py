"""The GPU groups placement actually builds, as twin scenarios: the surrogate's exam on real questions.

Every method of the placement stage places every workload of the grid (params.yaml ``placement.grid``) with
the surrogate under test; each GPU of each placement becomes the scenario the verification would simulate
(`adaptwin.placement.verify.gpu_scenario`: routed rates, S_max, A_max, content seed). Re-simulated by the
twin they show how far the surrogate is from its teacher exactly where placement relies on it. Only the
placements' final GPUs are taken (the candidates a method rejected along the way are not recorded).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptwin.dataset.sampler import scenario_id, unique


def placement_group_scenarios(context: Any, grid: dict[str, Any], shared_dir: str | Path,
                              methods: Sequence[str], duration_s: float, limit: int | None = None,
                              seed: int = 0) -> list[dict[str, Any]]:
    """The distinct GPU scenarios of ``methods`` on every workload of ``grid`` (at ``duration_s``); with
    ``limit``, a seeded subset of that many (ordered by scenario id first, so the subset does not depend on
    the order methods ran in)."""
    from adaptwin.placement.api import place
    from adaptwin.placement.verify import gpu_scenario
    from adaptwin.placement.workloads import expand_grid, generate

    scenarios = []
    for spec in expand_grid(grid):
        workload = generate(spec, shared_dir)
        for method in methods:
            placement = place(workload, context, method)
            scenarios += [gpu_scenario(placement, gpu, duration_s) for gpu in placement.gpus]
    found = sorted(unique(scenarios), key=scenario_id)
    if limit is None or limit >= len(found):
        return found
    keep = np.random.default_rng(seed).choice(len(found), size=limit, replace=False)
    return [found[i] for i in sorted(keep)]
