"""An analytic stand-in for the surrogate, so placement logic is tested without trained models, plus checks
that the stand-in behaves like a GPU (the placement tests rely on these properties).

The fake GPU: capacity falls with the slots' memory (A_max x S_max eats KV cache) and with swapping when fewer
slots than served adapters; throughput is a smooth minimum of the offered load and the capacity; the
starvation probability rises steeply as the load reaches the capacity; ITL grows with utilisation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from adaptwin.calibration.costs import load_calibration
from adaptwin.placement.core import Evaluator
from adaptwin.twin.scenario import A_MAX_CHOICES

FIXTURE = Path(__file__).parent / "fixtures" / "calibration_llama_example.json"
TOKENS = 400.0
BASE_CAPACITY = 6000.0


def fake_features(ranks, rates, max_loras) -> dict:
    """The paper's seven features (population standard deviations)."""
    ranks = np.asarray(ranks, dtype=float)
    rates = np.asarray(rates, dtype=float)
    return {
        "sum_rate": float(rates.sum()), "std_rate": float(rates.std()),
        "max_size": float(ranks.max()), "mean_size": float(ranks.mean()), "std_size": float(ranks.std()),
        "served_adapters": int(len(ranks)), "adapter_slots": int(max_loras),
    }


class FakePredictor:
    """Vectorised analytic predictions from the feature frame."""

    calls = 0

    def predict(self, features: pl.DataFrame) -> pl.DataFrame:
        FakePredictor.calls += 1
        a = features["adapter_slots"].to_numpy().astype(float)
        s = features["max_size"].to_numpy().astype(float)
        n = features["served_adapters"].to_numpy().astype(float)
        ideal = features["sum_rate"].to_numpy() * TOKENS
        capacity = BASE_CAPACITY * (1 - 0.5 * a * s / 3795.0) * (0.6 + 0.4 * np.minimum(1.0, a / n) ** 0.5)
        util = ideal / capacity
        throughput = ideal / (1 + util**12) ** (1 / 12)
        starve = 1 / (1 + np.exp(-(util - 0.97) * 60))
        return pl.DataFrame({
            "total_throughput": throughput, "itl_mean_ms": 12 + 30 * np.minimum(util, 1.5) ** 2,
            "ttft_mean_ms": 50 + 500 * util**4, "starvation_probability": starve, "starved": starve > 0.5,
        })


def fake_evaluator(margin: float = 0.03, **kwargs) -> Evaluator:
    return Evaluator(predictor=FakePredictor(), calibration=load_calibration(FIXTURE), tokens_per_request=TOKENS,
                     margin=margin, features_fn=fake_features, **kwargs)


def fake_workload(n: int = 300, seed: int = 0, ranks=(8, 16, 32), mean_rate: float = 0.2) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rates = rng.pareto(1.5, n) + 1
    return pl.DataFrame({
        "adapter_id": [f"ad{i:04d}" for i in range(n)],
        "rank": rng.choice(np.array(ranks), n).astype(np.int64),
        "rate": np.round(rates / rates.mean() * mean_rate, 6),
    })


def test_fake_gpu_starves_as_load_grows_and_prefers_enough_slots():
    ev = fake_evaluator()
    ranks = np.full(64, 8)
    light, heavy = np.full(64, 0.05), np.full(64, 1.0)
    res = ev.evaluate([(ranks, light), (ranks, heavy)], [[8, 64], [8, 64]])
    assert res["ok"][:2].all() and not res["ok"][2:].any()
    assert res["total_throughput"][3] > res["total_throughput"][2]  # more slots, less swapping
    assert (res["total_throughput"] <= res["ideal"] + 1e-9).all()


def test_memory_cap_follows_the_calibrated_kv_capacity():
    ev = fake_evaluator()
    cal = load_calibration(FIXTURE)
    for s_max in (8, 16, 32):
        options = ev.a_max_options(576, s_max)
        assert not any(cal.memory_error(a, s_max) for a in options)
        assert cal.memory_error(min(a for a in A_MAX_CHOICES if a > options[-1]), s_max)


def test_load_headroom_rejects_gpus_that_starve_under_a_heavier_load():
    """A GPU the plain rule accepts near its capacity is rejected when the same GPU with rates x (1 + h)
    would starve; light GPUs pass both; the headroom only ever removes candidates."""
    ranks = np.full(64, 8)
    plain, robust = fake_evaluator(), fake_evaluator(load_headroom=0.3)
    rates = [np.full(64, r) for r in np.linspace(0.05, 1.0, 40)]
    a = plain.evaluate([(ranks, r) for r in rates], [[64]] * len(rates))["ok"]
    b = robust.evaluate([(ranks, r) for r in rates], [[64]] * len(rates))["ok"]
    assert b[0] and a.sum() > b.sum()  # light load passes; some near-capacity GPUs are now refused
    assert not (b & ~a).any()
    # the last accepted load under headroom h, scaled by 1 + h, is still accepted by the plain rule
    last = int(np.flatnonzero(b).max())
    heavier = plain.evaluate([(ranks, rates[last] * 1.3)], [[64]])
    assert heavier["ok"][0]
