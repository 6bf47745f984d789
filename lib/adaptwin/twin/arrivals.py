"""Arrival times and adapters of every request of a scenario, drawn up front (vectorised, seeded).

Requests arrive in [0, duration_s), like the real by-time benchmark's window. Kinds:

* ``poisson``: each adapter is an independent Poisson process of its rate (drawn as their superposition
  with each arrival marked by an adapter in proportion to the rates, which is the same law). (The real benchmark's clients may
  send their first request at t = 0; the twin draws it like every other one.)
* ``unpredictable``: time is cut into periods of ``period_s`` (300 s). In the first period each adapter is
  Poisson at its rate; at every later period each adapter switches kind (Poisson <-> lognormal
  inter-arrival times) and its rate is multiplied or divided by 1.5 (fair coin), kept within
  [rate / 7.5, rate * 7.5]. Lognormal gaps have mean 1 / rate and log-sd ``sigma`` (default 1.0, a
  coefficient of variation of 1.31: burstier than Poisson's 1.0). Each period restarts the gap process.
* ``trace``: replay a CSV (``arrived_at,num_prefill_tokens,num_decode_tokens``, e.g. ``../shared/traces/``),
  times divided by ``speedup`` (default 1), rows at or after duration_s dropped. Mapping of requests to
  adapters: ``weighted`` (default; each request independently picks an adapter with probability
  proportional to its rate, seeded) or ``round_robin`` (request i goes to adapter i mod served).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adaptwin.twin.lengths import read_trace, read_trace_lengths, sample_lengths
from adaptwin.twin.scenario import Scenario

RATE_STEP = 1.5
RATE_SPAN = 7.5


@dataclass(frozen=True)
class Workload:
    """Every request of a run, sorted by arrival time (ties keep the draw order)."""

    times: np.ndarray  # s, float64
    adapters: np.ndarray  # adapter index 0..served-1
    prompts: np.ndarray  # prompt tokens
    outputs: np.ndarray  # output tokens

    def __len__(self) -> int:
        return int(len(self.times))


def make_workload(scenario: Scenario) -> Workload:
    """Draw the arrivals and lengths of ``scenario`` from its seed (independent streams for each)."""
    arrival_seed, length_seed = np.random.SeedSequence(scenario.seed).spawn(2)
    arr_rng, len_rng = np.random.default_rng(arrival_seed), np.random.default_rng(length_seed)
    kind = scenario.arrivals["kind"]
    if kind == "trace":
        times, adapters, rows = _trace(scenario, arr_rng)
    elif kind == "unpredictable":
        times, adapters = _unpredictable(scenario, arr_rng)
    else:
        times, adapters = _poisson(scenario.rates, scenario.duration_s, arr_rng)
    order = np.arange(len(times)) if kind == "poisson" else np.argsort(times, kind="stable")
    times, adapters = times[order], adapters[order]
    lengths = scenario.lengths
    if kind == "trace" and lengths["kind"] == "trace" and lengths["path"] == scenario.arrivals["path"]:
        prompts, outputs = read_trace_lengths(lengths["path"])
        prompts, outputs = prompts[rows[order]], outputs[rows[order]]
    else:
        prompts, outputs = sample_lengths(lengths, len(times), len_rng, scenario.model)
    return Workload(times, adapters.astype(np.int64), prompts, outputs)


def _poisson(rates: np.ndarray, duration: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Superposition of the adapters' Poisson processes (rate = sum of rates), each arrival marked with an
    adapter with probability rate / sum: the same law as independent per-adapter processes, drawn already
    sorted (cumulated exponential gaps), so a million arrivals need no sort."""
    total = float(rates.sum())
    if total <= 0:
        return np.empty(0), np.empty(0, dtype=np.int64)
    chunks, t0 = [], 0.0
    while t0 < duration:
        n = int(total * (duration - t0) + 6.0 * np.sqrt(total * (duration - t0)) + 16)
        t = t0 + np.cumsum(rng.exponential(1.0 / total, size=n))
        chunks.append(t[t < duration])
        t0 = float(t[-1])
    times = np.concatenate(chunks)
    # i.i.d. marks = multinomial counts in a uniformly random order (faster than a categorical draw each)
    adapters = np.repeat(np.arange(len(rates)), rng.multinomial(times.size, rates / total))
    rng.shuffle(adapters)
    return times, adapters


def _unpredictable(scenario: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    period = float(scenario.arrivals.get("period_s", 300.0))
    sigma = float(scenario.arrivals.get("sigma", 1.0))
    base = scenario.rates
    rates = base.copy()
    lognormal = np.zeros(len(base), dtype=bool)
    times, adapters = [], []
    start, first = 0.0, True
    while start < scenario.duration_s:
        if not first:
            lognormal = ~lognormal
            factor = np.where(rng.random(len(base)) < 0.5, RATE_STEP, 1.0 / RATE_STEP)
            rates = np.clip(rates * factor, base / RATE_SPAN, base * RATE_SPAN)
        length = min(period, scenario.duration_s - start)
        t, a = _period_arrivals(rates, lognormal, sigma, length, rng)
        times.append(t + start)
        adapters.append(a)
        start, first = start + period, False
    return np.concatenate(times), np.concatenate(adapters)


def _period_arrivals(
    rates: np.ndarray, lognormal: np.ndarray, sigma: float, length: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Arrivals of one period: renewal processes (exponential or lognormal gaps) from t = 0 of the period."""
    active = np.flatnonzero(rates > 0)
    if active.size == 0:
        return np.empty(0), np.empty(0, dtype=np.int64)
    mean_gap = 1.0 / rates[active]
    expected = rates[active].max() * length
    width = int(expected + 6.0 * np.sqrt(expected * (1 + np.exp(sigma**2))) + 16)
    times_out, adapters_out = [], []
    todo = np.arange(active.size)
    offset = np.zeros(active.size)
    while todo.size:
        exp_gaps = rng.exponential(1.0, size=(todo.size, width)) * mean_gap[todo, None]
        mu = np.log(mean_gap[todo]) - sigma**2 / 2
        log_gaps = np.exp(mu[:, None] + sigma * rng.standard_normal((todo.size, width)))
        gaps = np.where(lognormal[active[todo]][:, None], log_gaps, exp_gaps)
        t = offset[todo, None] + np.cumsum(gaps, axis=1)
        keep = t < length
        rows, _ = np.nonzero(keep)
        times_out.append(t[keep])
        adapters_out.append(active[todo][rows])
        offset[todo] = t[:, -1]
        todo = todo[t[:, -1] < length]
    return np.concatenate(times_out), np.concatenate(adapters_out)


def _trace(scenario: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = read_trace(scenario.arrivals["path"])
    times = table[:, 0] / float(scenario.arrivals.get("speedup", 1.0))
    rows = np.flatnonzero((times >= 0) & (times < scenario.duration_s))
    times = times[rows]
    served = scenario.served
    if scenario.arrivals.get("mapping", "weighted") == "round_robin":
        adapters = np.arange(len(rows)) % served
    else:
        total = scenario.rates.sum()
        weights = scenario.rates / total if total > 0 else np.full(served, 1.0 / served)
        adapters = rng.choice(served, size=len(rows), p=weights)
    return times, adapters, rows
