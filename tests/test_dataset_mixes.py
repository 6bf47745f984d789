"""Placement-shaped scenarios, the fresh test set, placement-driven groups, and the slot-physics features:
invariants and independent calculations (Monte Carlo for the closed forms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_placement_fakes import BASE_CAPACITY, fake_evaluator

from adaptwin.calibration.costs import load_calibration
from adaptwin.dataset.mixes import (
    LAWS,
    MIN_REQUESTS,
    TEST_LAWS,
    TRAIN_LAWS,
    a_max_options,
    law_rates,
    mix_scenarios,
    rank_subsets,
    small_mix,
)
from adaptwin.dataset.sampler import SamplerConfig
from adaptwin.dataset.stage import DatasetKnobs, fresh_scenarios
from adaptwin.placement.api import Context
from adaptwin.placement.groups import placement_group_scenarios
from adaptwin.surrogate.evaluate import EvalSet, breakdown, smape_pct
from adaptwin.surrogate.features import PAPER_FEATURES, expected_distinct, gpu_features, hot_ratio, top_share
from adaptwin.twin.scenario import ScenarioError, expand_groups, scenario_id

MODEL = "llama-3.1-8b-instruct"
CALIBRATION = load_calibration(Path(__file__).parent / "fixtures" / "calibration_llama_example.json")
CONFIG = SamplerConfig(MODEL, duration_s=60)


@pytest.mark.parametrize("law", sorted(LAWS))
def test_law_rates_sum_to_the_total_and_are_positive(law):
    rates = law_rates(np.random.default_rng(3), law, 12.0, 200)
    assert len(rates) == 200 and (rates > 0).all()
    assert rates.sum() == pytest.approx(12.0, rel=1e-3)  # four significant digits per rate


def test_hot_cold_has_three_levels_and_equal_has_one():
    rng = np.random.default_rng(0)
    assert len(set(law_rates(rng, "hot_cold", 5.0, 90).tolist())) <= 3
    assert len(set(law_rates(rng, "equal", 5.0, 90).tolist())) == 1
    with pytest.raises(ScenarioError, match="popularity law"):
        law_rates(rng, "gaussian", 5.0, 10)


def test_mix_scenarios_are_reproducible_startable_and_cover_placements_choices():
    a = mix_scenarios(CONFIG, 300, seed=5, calibration=CALIBRATION)
    assert [scenario_id(s) for s in a] == [scenario_id(s) for s in mix_scenarios(CONFIG, 300, 5, calibration=CALIBRATION)]
    assert {scenario_id(s) for s in a}.isdisjoint(scenario_id(s) for s in mix_scenarios(CONFIG, 300, 6,
                                                                                        calibration=CALIBRATION))
    resident = small = 0
    small_rank_sets = set()
    for s in a:
        server = s["server"]
        ranks, _ = expand_groups(s["adapters"])
        served, max_loras, s_max = len(ranks), server["max_loras"], server["max_lora_rank"]
        assert s_max == max(ranks) and 1 <= max_loras <= served <= 576
        assert not CALIBRATION.memory_error(max_loras, s_max)
        assert sum(expand_groups(s["adapters"])[1]) * s["duration_s"] >= 0.99 * MIN_REQUESTS  # a measurable window
        resident += max_loras == served
        small += served < 8
        if served < 8:
            small_rank_sets.add(tuple(sorted(set(ranks))))
    assert resident > 20 and small > 10  # off the A_max grid and below the random design's 8 adapters
    # placement's small GPUs hold any subset of a workload's ranks: rank 32 alone, 16 and 32 without 8
    assert {(32,), (16, 32)} <= small_rank_sets


def test_small_mix_is_a_subset_that_fits():
    rng = np.random.default_rng(0)
    assert rank_subsets((8, 16, 32)) == [(8,), (16,), (32,), (8, 16), (8, 32), (16, 32), (8, 16, 32)]
    drawn = {small_mix(rng, (8, 16, 32), 2) for _ in range(200)}
    assert drawn == {c for c in rank_subsets((8, 16, 32)) if len(c) <= 2}


def test_a_max_options_end_at_the_served_count_or_the_memory_cap():
    assert a_max_options(10, 16, None) == [8, 10]
    capped = a_max_options(576, 32, CALIBRATION)
    assert capped[-1] == CALIBRATION.max_feasible_loras(32, sorted(set(capped) | set(range(1, 8)) | {576}))
    assert all(not CALIBRATION.memory_error(a, 32) for a in capped)


def test_fresh_set_must_differ_from_training_in_seed_and_law():
    knobs = DatasetKnobs(n_scenarios=0, duration_s=60, fresh_scenarios=20)
    fresh = fresh_scenarios(MODEL, knobs, CALIBRATION)
    assert len(fresh) == 20 and set(TEST_LAWS).isdisjoint(TRAIN_LAWS)
    with pytest.raises(ValueError, match="must differ"):
        fresh_scenarios(MODEL, DatasetKnobs(n_scenarios=0, fresh_seed=0, fresh_laws=("zipf",)), CALIBRATION)


def test_expected_distinct_adapters_match_a_monte_carlo_draw():
    rng = np.random.default_rng(1)
    served, batch, cv2 = 300, 120, 1.5
    draws = []
    for _ in range(400):
        shares = rng.gamma(1 / cv2, cv2, served)
        hits = rng.poisson(batch * shares / shares.sum())
        draws.append((hits > 0).sum())
    # the closed form averages over the law; a finite draw normalises the shares: agree within 3 %
    assert expected_distinct(np.array(batch), np.array(served), np.array(cv2)) == pytest.approx(np.mean(draws), rel=0.03)
    equal = expected_distinct(np.array(50.0), np.array(100.0), np.array(1e-4))
    assert equal == pytest.approx(100 * (1 - np.exp(-0.5)), rel=1e-3)
    assert expected_distinct(np.array(10.0), np.array(500.0), np.array(2.0)) < 10.0


def test_top_share_and_hot_ratio_match_sorted_lognormal_samples():
    rng = np.random.default_rng(2)
    for cv2, fraction in ((0.5, 0.1), (2.0, 0.25), (1.0, 0.5)):
        sigma = np.sqrt(np.log1p(cv2))
        x = np.sort(rng.lognormal(0.0, sigma, 400_000))[::-1]
        assert x.std() ** 2 / x.mean() ** 2 == pytest.approx(cv2, rel=0.1)  # the law has the moments asked for
        expected = x[: int(fraction * len(x))].sum() / x.sum()
        assert top_share(np.array(fraction), np.array(cv2)) == pytest.approx(expected, abs=0.01)
        served = 50  # the busiest of 50 adapters: the draws' 1 - 1/(2 x 50) quantile over their mean
        assert hot_ratio(np.array(served), np.array(cv2)) == pytest.approx(np.quantile(x, 0.99) / x.mean(), rel=0.02)
    assert top_share(np.array(1.0), np.array(3.0)) == 1.0


def test_slot_pressure_grows_with_skew_inverse_and_falls_with_slots():
    def feats(rates, max_loras):
        return gpu_features([16] * len(rates), rates, max_loras, calibration=CALIBRATION)

    flat, skewed = feats([0.2] * 100, 16), feats(list(np.linspace(0.01, 0.39, 100)), 16)
    assert skewed["effective_adapters"] < flat["effective_adapters"] == pytest.approx(100.0, rel=1e-3)
    assert feats([0.2] * 100, 32)["slot_pressure"] == pytest.approx(flat["slot_pressure"] / 2, rel=0.05)
    assert 0 < flat["resident_share"] < 1 and feats([0.2] * 16, 16)["resident_share"] == 1.0
    assert flat["distinct_demand"] <= min(flat["batch_demand"], 100) + 1e-9


def test_breakdown_bins_cover_every_row_and_score_like_smape():
    n = 40
    rng = np.random.default_rng(0)
    features = pl.DataFrame({"sum_rate": rng.uniform(0.5, 20, n), "std_rate": rng.uniform(0, 0.1, n),
                             "max_size": [16.0] * n, "mean_size": [12.0] * n, "std_size": [4.0] * n,
                             "served_adapters": [64.0] * n, "adapter_slots": rng.choice([8.0, 32.0, 100.0], n)})
    truth = pl.DataFrame({"total_throughput": rng.uniform(100, 5000, n), "itl_mean_ms": [20.0] * n,
                          "ttft_mean_ms": [50.0] * n, "starved": rng.random(n) < 0.3})
    guess = truth["total_throughput"].to_numpy() * rng.uniform(0.9, 1.1, n)

    def predict(frame):
        return pl.DataFrame({"total_throughput": guess, "starved": truth["starved"].to_numpy()})

    rows = breakdown(predict, EvalSet("toy", features.select(PAPER_FEATURES), truth), CALIBRATION)
    for by in ("a_max", "load"):
        assert rows.filter(pl.col("by") == by)["n"].sum() == n
    mask = features["adapter_slots"].to_numpy() == 32.0
    row = rows.filter((pl.col("by") == "a_max") & (pl.col("bin") == "32-63")).row(0, named=True)
    assert row["n"] == mask.sum()
    assert row["throughput_smape_pct"] == pytest.approx(smape_pct(truth["total_throughput"].to_numpy()[mask], guess[mask]))


def test_placement_groups_are_the_placements_gpus_with_every_adapters_rate():
    grid = {"kinds": ["powerlaw"], "adapters": [60], "rank_mixes": ["8-16"], "multipliers": [1], "mean_rate": 0.5,
            "seed": 0}
    context = Context(MODEL, fake_evaluator(), BASE_CAPACITY, "fake", "test")
    from adaptwin.placement.workloads import expand_grid, generate

    workload = generate(expand_grid(grid)[0])
    scenarios = placement_group_scenarios(context, grid, "/nonexistent", ["ffd"], 60.0)
    total = sum(sum(expand_groups(s["adapters"])[1]) for s in scenarios)
    assert total == pytest.approx(float(workload["rate"].sum()), rel=1e-6)
    assert sum(len(expand_groups(s["adapters"])[0]) for s in scenarios) == workload.height
    assert len(placement_group_scenarios(context, grid, "/nonexistent", ["ffd"], 60.0, limit=1)) == 1


def test_float_and_array_paths_of_the_physics_features_agree():
    from adaptwin.surrogate.features import slot_physics

    rng = np.random.default_rng(4)
    n = 40  # above the float path's 16 rows
    base = {"served_adapters": rng.integers(1, 577, n).astype(float), "sum_rate": rng.uniform(0.1, 40, n),
            "std_rate": rng.uniform(0, 0.3, n)}
    base["adapter_slots"] = np.minimum(rng.integers(1, 320, n), base["served_adapters"]).astype(float)
    kv, load = rng.uniform(1e3, 3e5, n), rng.uniform(0, 3, n)
    arrays = slot_physics(base, kv, load)
    for i in range(0, n, 7):
        one = slot_physics({k: v[i:i + 1] for k, v in base.items()}, kv[i:i + 1], load[i:i + 1])
        for name, value in one.items():
            assert value[0] == pytest.approx(arrays[name][i], rel=1e-9), name
