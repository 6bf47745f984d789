"""Single-GPU scenarios for the twin: the questions placement will ask, sampled so both classes are covered.

A scenario is exactly the dict `adaptwin.twin.simulate` takes (the ``adaptwin simulate`` YAML):
``model``, ``server``, ``adapters`` (groups of ``{count, rank, rate}``), ``arrivals``, ``lengths``,
``duration_s``, ``seed``. Its seed is derived from its own content (`content_seed`), and its identity is a hash
of the whole dict (`scenario_id`), so any row of a dataset can be recomputed alone from its scenario.

Design space: served adapters 8..576, A_max from `A_MAX_CHOICES` (<= served, and startable when a
calibration is given), rank mixes `RANK_MIXES` with S_max = the mix's largest rank, per-adapter rates from
starvation-free to heavily starved (equal, real-run-like levels, lognormal and power-law spreads), Poisson and
unpredictable arrivals, ShareGPT lengths. The offered load is drawn log-uniformly *relative to a capacity proxy*
of the GPU (`capacity_rate`), with extra mass in the band where the twin's verdict flips (``boundary_band``:
the proxy assumes a full batch, so the twin saturates at about half of it), so the starvation boundary is
dense in the data wherever A_max and the served count put it. `real_grid_scenarios` adds the exact configurations of the
corpus's real serving runs (by-time Llama-3.1-8B family).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptwin.twin.scenario import (
    A_MAX_CHOICES,
    MAX_NUM_SEQS,
    ScenarioError,
    make_scenario,
    scenario_id,
    unique,
)

#: rank mixes of a GPU; S_max is the largest rank of the mix
RANK_MIXES: tuple[tuple[int, ...], ...] = ((8,), (8, 16), (8, 16, 32))
SERVED_MIN, SERVED_MAX = 8, 576
#: the real runs' grid (README of the corpus, section 5.6)
REAL_RATE_SETS: tuple[tuple[float, ...], ...] = ((0.1, 0.05, 0.025), (1.6, 0.8, 0.4))
REAL_SERVED: tuple[int, ...] = (8, 16, 32, 64, 128, 192, 256, 320, 384)
REAL_A_MAX: dict[int, tuple[int, ...]] = {16: (8, 16, 32, 64, 128, 192, 256, 320, 384), 32: (8, 16, 32, 64, 128, 192)}
REAL_RANKS: dict[int, tuple[int, ...]] = {16: (8, 16), 32: (8, 16, 32)}
RATE_PATTERNS: tuple[str, ...] = ("equal", "levels", "lognormal", "powerlaw")


@dataclass(frozen=True)
class SamplerConfig:
    """Knobs of the random part of the design (params.yaml ``dataset:`` section)."""

    model: str
    duration_s: float = 600.0
    load_range: tuple[float, float] = (0.01, 20.0)  # offered load / capacity proxy, log-uniform
    boundary_fraction: float = 0.5  # share of scenarios drawn log-uniformly in boundary_band instead
    boundary_band: tuple[float, float] = (0.15, 1.5)  # where the twin's verdict flips, relative to the proxy
    unpredictable_fraction: float = 0.25
    served_range: tuple[int, int] = (SERVED_MIN, SERVED_MAX)

    def __post_init__(self) -> None:
        for name in ("load_range", "boundary_band"):
            lo, hi = getattr(self, name)
            if not 0 < lo < hi:
                raise ScenarioError(f"dataset.{name}: expected 0 < low < high, got {getattr(self, name)!r}")
        if not 0 <= self.boundary_fraction <= 1:
            raise ScenarioError(f"dataset.boundary_fraction: expected in [0, 1], got {self.boundary_fraction!r}")
        if not 0 <= self.unpredictable_fraction <= 1:
            raise ScenarioError(
                f"dataset.unpredictable_fraction: expected in [0, 1], got {self.unpredictable_fraction!r}")
        if self.duration_s <= 0:
            raise ScenarioError(f"dataset.duration_s: expected > 0, got {self.duration_s!r}")
        s_lo, s_hi = self.served_range
        if not SERVED_MIN <= s_lo <= s_hi <= SERVED_MAX:
            raise ScenarioError(f"dataset.served_range: expected within [8, 576], got {self.served_range!r}")


def _round_rate(rate: float) -> float:
    """Four significant digits: rates stay readable in the YAML and equal rates group together."""
    return float(f"{rate:.4g}")


def spread_rates(rng: np.random.Generator, total: float, n: int, pattern: str) -> np.ndarray:
    """``n`` per-adapter rates summing to about ``total`` with the given heterogeneity ``pattern``."""
    if pattern == "equal":
        weights = np.ones(n)
    elif pattern == "levels":  # like the real runs: k values in geometric ratio, assigned cyclically
        k = int(rng.integers(2, 5))
        ratio = rng.uniform(0.25, 0.75)
        weights = ratio ** (np.arange(n) % k)
    elif pattern == "lognormal":
        weights = rng.lognormal(0.0, rng.uniform(0.2, 1.5), n)
    elif pattern == "powerlaw":  # the skewed popularity placement workloads have
        weights = (np.arange(1, n + 1, dtype=float)) ** -rng.uniform(0.3, 1.5)
    else:
        raise ScenarioError(f"rate pattern: unknown {pattern!r}; known: {', '.join(RATE_PATTERNS)}")
    rates = total * weights / weights.sum()
    return rng.permutation(np.array([_round_rate(max(r, 1e-5)) for r in rates]))


def assign_ranks(rng: np.random.Generator, mix: Sequence[int], n: int) -> np.ndarray:
    """Ranks for ``n`` adapters: cycled like the real runs half the time, else Dirichlet shares; every rank of
    the mix appears at least once so S_max is the mix's largest rank."""
    if len(mix) > n:
        raise ScenarioError(f"rank mix {tuple(mix)} needs at least {len(mix)} adapters, got {n}")
    if rng.random() < 0.5:
        return np.array([mix[i % len(mix)] for i in range(n)])
    shares = rng.dirichlet(np.ones(len(mix)))
    extra = rng.multinomial(n - len(mix), shares)
    return np.repeat(np.array(mix), extra + 1)


# ---- capacity proxy ----------------------------------------------------------------------------------------
def capacity_rate(calibration: Any | None, max_loras: int, s_max: int, served: int) -> float:
    """The requests/s the offered load is drawn relative to: `Calibration.capacity_rate` at the real runs'
    server settings, or 40 req/s (about an 8B model on one GPU) without a calibration."""
    if calibration is None:
        return 40.0
    return calibration.capacity_rate(max_loras, s_max, served, max_num_seqs=MAX_NUM_SEQS)


# ---- samplers ----------------------------------------------------------------------------------------------
def feasible_a_max(served: int, s_max: int, calibration: Any | None) -> list[int]:
    """A_max choices for this served count and S_max that vLLM can start (per the calibration, if given)."""
    choices = [a for a in A_MAX_CHOICES if a <= served]
    if calibration is not None:
        choices = [a for a in choices if not calibration.memory_error(a, s_max)]
    return choices


def _draw_served(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Served adapters log-uniform in [lo, hi]: small GPUs are as interesting as large ones."""
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def _draw_load(rng: np.random.Generator, config: SamplerConfig) -> float:
    """Offered load relative to the capacity proxy: log-uniform, plus a share near the boundary."""
    lo, hi = config.boundary_band if rng.random() < config.boundary_fraction else config.load_range
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_one(rng: np.random.Generator, config: SamplerConfig, calibration: Any | None = None) -> dict[str, Any]:
    """One random scenario of the design space (see the module docstring).

    A_max is drawn uniformly among the startable choices first and the served count log-uniformly in
    [A_max, max] after, so large slot counts are as frequent as small ones (drawing the served count first
    would make A_max = 8 the most common value by far).
    """
    lo, hi = config.served_range
    mix = RANK_MIXES[int(rng.integers(len(RANK_MIXES)))]
    choices = feasible_a_max(hi, max(mix), calibration)
    if not choices:
        raise ScenarioError(f"dataset: no startable A_max for S_max {max(mix)} with served <= {hi} "
                            f"(calibration {getattr(calibration, 'model', None)!r})")
    max_loras = choices[int(rng.integers(len(choices)))]
    served = max(_draw_served(rng, max(lo, max_loras, len(mix)), hi), len(mix))
    ranks = assign_ranks(rng, mix, served)
    total = _draw_load(rng, config) * capacity_rate(calibration, max_loras, max(mix), served)
    pattern = RATE_PATTERNS[int(rng.integers(len(RATE_PATTERNS)))]
    rates = spread_rates(rng, total, served, pattern)
    arrivals = "unpredictable" if rng.random() < config.unpredictable_fraction else "poisson"
    return make_scenario(config.model, ranks.tolist(), rates.tolist(), max_loras, arrivals=arrivals,
                         duration_s=config.duration_s)


def sample_scenarios(config: SamplerConfig, n: int, seed: int = 0,
                     calibration: Any | None = None) -> list[dict[str, Any]]:
    """``n`` random scenarios, reproducible from ``seed`` (duplicates, if any, are dropped by id)."""
    if n < 0:
        raise ScenarioError(f"dataset.n_scenarios: expected >= 0, got {n!r}")
    rng = np.random.default_rng(seed)
    return unique([sample_one(rng, config, calibration) for _ in range(n)])


def real_server_configs(calibration: Any | None = None) -> list[tuple[int, int, int]]:
    """(S_max, A_max, served) of the real runs' grid that start (per the calibration, if given), in grid order."""
    return [(s_max, max_loras, served) for s_max, max_loras_values in REAL_A_MAX.items() for max_loras in max_loras_values
            if calibration is None or not calibration.memory_error(max_loras, s_max)
            for served in REAL_SERVED if served >= max_loras]


def real_grid_scenarios(model: str, duration_s: float = 600.0, calibration: Any | None = None,
                        seed: int = 0, fraction: float = 1.0) -> list[dict[str, Any]]:
    """The exact configurations of the real serving runs (ranks cycled over the served adapters, each rate of
    the set given to one third of them, cyclically then shuffled, as the by-time benchmark does).

    ``fraction`` < 1 keeps a deterministic subset (by scenario id), for budgets that cannot afford them all."""
    if not 0 <= fraction <= 1:
        raise ScenarioError(f"dataset.real_grid_fraction: expected in [0, 1], got {fraction!r}")
    rng = np.random.default_rng(seed)
    scenarios = []
    for rates_set in REAL_RATE_SETS:
        for s_max, max_loras, served in real_server_configs(calibration):
            mix = REAL_RANKS[s_max]
            ranks = [mix[i % len(mix)] for i in range(served)]
            rates = rng.permutation([rates_set[i % len(rates_set)] for i in range(served)])
            scenarios.append(make_scenario(model, ranks, rates.tolist(), max_loras, duration_s=duration_s))
    return [s for s in unique(scenarios) if int(scenario_id(s)[:8], 16) / 16**8 < fraction]


def grid_variant_scenarios(config: SamplerConfig, n: int, seed: int = 0,
                           calibration: Any | None = None) -> list[dict[str, Any]]:
    """``n`` scenarios on the real runs' server configurations (S_max, A_max, served) with other traffic:
    ranks from the run's mix (cycled or Dirichlet), total load log-uniform in ``config.load_range`` times the
    capacity proxy, spread by a random rate pattern, Poisson or unpredictable arrivals.

    Why: the real-run grid teaches the surrogate each configuration at three fixed rate levels only; real
    workloads put heterogeneous rates and ranks on the same configurations. Reproducible from ``seed`` (a
    stream of its own, so adding variants leaves the random design unchanged)."""
    if n < 0:
        raise ScenarioError(f"dataset.grid_variants: expected >= 0, got {n!r}")
    configs = real_server_configs(calibration)
    rng = np.random.default_rng([seed, 1])
    lo, hi = config.load_range
    out = []
    for _ in range(n):
        s_max, max_loras, served = configs[int(rng.integers(len(configs)))]
        ranks = assign_ranks(rng, REAL_RANKS[s_max], served)
        total = math.exp(rng.uniform(math.log(lo), math.log(hi))) * capacity_rate(calibration, max_loras, s_max, served)
        rates = spread_rates(rng, total, served, RATE_PATTERNS[int(rng.integers(len(RATE_PATTERNS)))])
        arrivals = "unpredictable" if rng.random() < config.unpredictable_fraction else "poisson"
        out.append(make_scenario(config.model, ranks.tolist(), rates.tolist(), max_loras, arrivals=arrivals,
                                 duration_s=config.duration_s))
    return unique(out)
