"""Single-GPU scenarios shaped like the GPU groups placement builds: skewed popularity, any A_max it may pick.

Why a second sampler: placement fills a GPU with a few hot adapters and many cold ones (Zipf-like popularity,
Azure-trace counts, 5.9's three-rate groups), picks A_max anywhere up to the memory cap (including
``A_max = served``, which is off `A_MAX_CHOICES`), and packs up to ``max_served`` adapters. A surrogate trained
on near-equal rates at grid A_max values has never seen most of those questions.

Popularity laws (`LAWS`, each a function returning per-adapter weights; the total load is set apart):

* ``zipf``: weight of the i-th most popular adapter ~ i^-s, s in [0.4, 1.6];
* ``hot_cold``: like the heterogeneous real runs (data card 5.9): three rate levels in ratios drawn from
  1:2..1:128, assigned cyclically;
* ``azure``: the placement workloads' Azure construction: every adapter one request, the rest of a window of
  ``k`` requests per adapter spread by Zipf popularity (exponent 0.5..1.2) as a multinomial (the traces carry
  no adapter ids; ``k`` in [3, 300] sets how coarse the counts are);
* ``lognormal``: i.i.d. lognormal weights, sigma in [0.2, 2.0];
* ``equal``: every adapter alike (the homogeneous real runs).

``pareto`` (i.i.d. Pareto weights, exponent in [1.05, 2.5], like placement's ``powerlaw`` workloads) is kept
out of training by default: the fresh test set draws it, with another seed, so the surrogate is judged on a
popularity law it was not fitted to.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from adaptwin.dataset.sampler import (
    RANK_MIXES,
    SamplerConfig,
    _draw_load,
    _draw_served,
    assign_ranks,
    capacity_rate,
)
from adaptwin.twin.scenario import A_MAX_CHOICES, ScenarioError, make_scenario, unique

TRAIN_LAWS: tuple[str, ...] = ("zipf", "hot_cold", "azure", "lognormal", "equal")
TEST_LAWS: tuple[str, ...] = ("pareto",)
#: share of scenarios whose A_max is the served count itself (every adapter resident; placement's last option)
ALL_RESIDENT_FRACTION = 0.15
#: share of scenarios with fewer adapters than the random design's minimum of 8: placement ends with such GPUs
#: (an adapter too busy for one GPU is split into GPUs of one to a few adapters)
SMALL_FRACTION = 0.1
SMALL_SERVED = 7
#: fewest requests a scenario offers over its window: with a handful of requests the twin's throughput ratio
#: and verdict are noise (requests still running at the end are dropped), which taught a surrogate that nearly
#: empty GPUs starve and made the greedy give every adapter a GPU of its own
MIN_REQUESTS = 100


def _zipf(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=float) ** -rng.uniform(0.4, 1.6)


def _hot_cold(rng: np.random.Generator, n: int) -> np.ndarray:
    levels = np.sort(np.exp(rng.uniform(0.0, math.log(128.0), 2)))
    return np.array([1.0, *levels])[np.arange(n) % 3]


def _azure(rng: np.random.Generator, n: int) -> np.ndarray:
    per_adapter = math.exp(rng.uniform(math.log(3.0), math.log(300.0)))
    popularity = np.arange(1, n + 1, dtype=float) ** -rng.uniform(0.5, 1.2)
    extra = max(0, int(round(per_adapter * n)) - n)
    return 1.0 + rng.multinomial(extra, popularity / popularity.sum())


def _lognormal(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.lognormal(0.0, rng.uniform(0.2, 2.0), n)


def _equal(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.ones(n)


def _pareto(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.pareto(rng.uniform(1.05, 2.5), n) + 1.0


LAWS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "zipf": _zipf, "hot_cold": _hot_cold, "azure": _azure, "lognormal": _lognormal, "equal": _equal,
    "pareto": _pareto,
}


def law_rates(rng: np.random.Generator, law: str, total: float, n: int) -> np.ndarray:
    """``n`` per-adapter rates (req/s, 4 significant digits, shuffled) summing to about ``total``, shaped by
    the popularity ``law``."""
    if law not in LAWS:
        raise ScenarioError(f"popularity law: unknown {law!r}; known: {', '.join(LAWS)}")
    weights = LAWS[law](rng, n)
    rates = total * weights / weights.sum()
    return rng.permutation(np.array([float(f"{max(r, 1e-5):.4g}") for r in rates]))


def a_max_options(served: int, s_max: int, calibration: Any | None) -> list[int]:
    """The A_max values placement may give ``served`` adapters at ``s_max``: grid values below
    min(served, memory cap), plus that limit itself (`adaptwin.placement.core.Evaluator.a_max_options`)."""
    cap = max(A_MAX_CHOICES)
    if calibration is not None:
        pool = sorted(set(A_MAX_CHOICES) | set(range(1, min(A_MAX_CHOICES))))
        cap = int(calibration.max_feasible_loras(int(s_max), pool))
    limit = min(served, cap)
    return [a for a in A_MAX_CHOICES if a < limit] + ([limit] if limit > 0 else [])


def rank_subsets(mix: Sequence[int]) -> list[tuple[int, ...]]:
    """Every non-empty subset of the rank mix ``mix``, smallest first."""
    return [c for k in range(1, len(mix) + 1) for c in itertools.combinations(mix, k)]


def small_mix(rng: np.random.Generator, mix: Sequence[int], served: int) -> tuple[int, ...]:
    """The ranks of a GPU of ``served`` < 8 adapters: a random non-empty subset of ``mix`` that fits.

    Why: placement deals an 8-16-32 workload's adapters onto GPUs, so a GPU of one to a few adapters often
    holds rank 32 alone, or 16 and 32 without 8. Drawn only from whole mixes, the training never showed a
    surrogate a single rank-32 adapter (S_max 32 needs three adapters there), and one such surrogate called
    every lone rank-32 adapter starved, so the greedy gave each its own GPU."""
    options = [c for c in rank_subsets(mix) if len(c) <= served]
    return options[int(rng.integers(len(options)))]


def _draw_server(rng: np.random.Generator, config: SamplerConfig, mix: Sequence[int],
                 calibration: Any | None) -> tuple[int, int]:
    """(A_max, served): A_max uniform over the options first so large slot counts are frequent, served
    log-uniform above it; sometimes A_max = served (every adapter resident)."""
    lo, hi = config.served_range
    options = a_max_options(hi, max(mix), calibration)
    if not options:
        raise ScenarioError(f"dataset: no startable A_max for S_max {max(mix)}")
    if rng.random() < SMALL_FRACTION:
        served = int(rng.integers(len(mix), SMALL_SERVED + 1))
        return int(rng.integers(1, served + 1)), served
    if rng.random() < ALL_RESIDENT_FRACTION:
        served = _draw_served(rng, max(lo, len(mix)), min(hi, options[-1]))
        return served, served
    max_loras = options[int(rng.integers(len(options)))]
    return max_loras, max(_draw_served(rng, max(lo, max_loras, len(mix)), hi), len(mix))


def sample_mix(rng: np.random.Generator, config: SamplerConfig, laws: Sequence[str],
               calibration: Any | None = None) -> dict[str, Any]:
    """One placement-shaped scenario: a rank mix, (A_max, served), a popularity law from ``laws``, and a total
    load drawn relative to the capacity proxy (dense near the starvation boundary, as `sample_one`)."""
    mix = RANK_MIXES[int(rng.integers(len(RANK_MIXES)))]
    max_loras, served = _draw_server(rng, config, mix, calibration)  # served >= len(mix): every rank appears
    if served <= SMALL_SERVED:
        mix = small_mix(rng, mix, served)
    ranks = assign_ranks(rng, mix, served)
    total = _draw_load(rng, config) * capacity_rate(calibration, max_loras, max(mix), served)
    total = max(total, MIN_REQUESTS / config.duration_s)
    rates = law_rates(rng, laws[int(rng.integers(len(laws)))], total, served)
    arrivals = "unpredictable" if rng.random() < config.unpredictable_fraction else "poisson"
    return make_scenario(config.model, ranks.tolist(), rates.tolist(), max_loras, arrivals=arrivals,
                         duration_s=config.duration_s)


def mix_scenarios(config: SamplerConfig, n: int, seed: int = 0, laws: Sequence[str] = TRAIN_LAWS,
                  calibration: Any | None = None) -> list[dict[str, Any]]:
    """``n`` placement-shaped scenarios drawn with ``laws``, reproducible from ``seed`` (a stream of its own:
    adding them leaves the other parts of the design unchanged)."""
    if n < 0:
        raise ScenarioError(f"dataset.mix_scenarios: expected >= 0, got {n!r}")
    unknown = [law for law in laws if law not in LAWS]
    if unknown or not laws:
        raise ScenarioError(f"popularity laws {list(laws)!r}: unknown {unknown}; known: {', '.join(LAWS)}")
    rng = np.random.default_rng([seed, 2])
    return unique([sample_mix(rng, config, laws, calibration) for _ in range(n)])
