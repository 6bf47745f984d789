"""adaptwin.dataset: sampling single-GPU scenarios for twin-generated training data (see `adaptwin.dataset.sampler`).

A scenario itself (its fields, identity and seed) is the twin's: `adaptwin.twin.scenario`. Sweeping many of
them through the twin is `adaptwin.sweep`.
"""

from adaptwin.dataset.sampler import (
    RANK_MIXES,
    SamplerConfig,
    real_grid_scenarios,
    sample_scenarios,
)

__all__ = ["RANK_MIXES", "SamplerConfig", "real_grid_scenarios", "sample_scenarios"]
