"""adaptwin.dataset: single-GPU scenarios for twin-generated training data (see `adaptwin.dataset.sampler`).

Sweeping them through the twin is `adaptwin.sweep`.
"""

from adaptwin.dataset.sampler import (
    A_MAX_CHOICES,
    RANK_MIXES,
    SamplerConfig,
    ScenarioError,
    adapter_groups,
    content_seed,
    expand_groups,
    make_scenario,
    real_grid_scenarios,
    sample_scenarios,
    scenario_id,
)

__all__ = [
    "A_MAX_CHOICES", "RANK_MIXES", "SamplerConfig", "ScenarioError", "adapter_groups", "content_seed",
    "expand_groups", "make_scenario", "real_grid_scenarios", "sample_scenarios", "scenario_id",
]
