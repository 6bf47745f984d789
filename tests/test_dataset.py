"""The scenario sampler: design space, content-derived seeds, the real-run grid, bad knobs named."""

from __future__ import annotations

import numpy as np
import pytest

from adaptwin.calibration.costs import load_calibration
from adaptwin.dataset import SamplerConfig, real_grid_scenarios, sample_scenarios
from adaptwin.dataset.sampler import spread_rates
from adaptwin.twin.scenario import (
    A_MAX_CHOICES,
    ScenarioError,
    content_seed,
    expand_groups,
    make_scenario,
    scenario_id,
)

MODEL = "llama-3.1-8b-instruct"


@pytest.fixture(scope="module")
def calibration():
    from pathlib import Path

    return load_calibration(Path(__file__).parent / "fixtures" / "calibration_llama_example.json")


def test_samples_cover_the_design_space(calibration):
    scenarios = sample_scenarios(SamplerConfig(MODEL), 600, seed=1, calibration=calibration)
    assert len(scenarios) == 600
    served = np.array([s["server"]["max_cpu_loras"] for s in scenarios])
    max_loras = np.array([s["server"]["max_loras"] for s in scenarios])
    assert served.min() >= 8 and served.max() <= 576 and (max_loras <= served).all()
    assert set(max_loras) <= set(A_MAX_CHOICES) and len(set(max_loras)) >= 10
    for s in scenarios:
        ranks, _ = expand_groups(s["adapters"])
        assert len(ranks) == s["server"]["max_cpu_loras"]
        assert s["server"]["max_lora_rank"] == max(ranks)  # S_max = the mix's largest rank
        assert set(ranks) in ({8}, {8, 16}, {8, 16, 32})
        assert not calibration.memory_error(s["server"]["max_loras"], s["server"]["max_lora_rank"])
    kinds = {s["arrivals"]["kind"] for s in scenarios}
    assert kinds == {"poisson", "unpredictable"}
    total = np.array([sum(g["count"] * g["rate"] for g in s["adapters"]) for s in scenarios])
    assert total.max() / total.min() > 100  # from nearly idle to heavily overloaded


def test_seed_and_id_come_from_the_content():
    a = make_scenario(MODEL, [8, 16, 8], [0.1, 0.2, 0.1], 2, duration_s=60)
    b = make_scenario(MODEL, [8, 8, 16], [0.1, 0.1, 0.2], 2, duration_s=60)  # same set, other order
    assert a == b and scenario_id(a) == scenario_id(b) and a["seed"] == content_seed(a)
    c = make_scenario(MODEL, [8, 16, 8], [0.1, 0.2, 0.1], 2, duration_s=120)
    assert c["seed"] != a["seed"] and scenario_id(c) != scenario_id(a)


def test_sampling_is_reproducible():
    config = SamplerConfig(MODEL, duration_s=60)
    assert sample_scenarios(config, 20, seed=5) == sample_scenarios(config, 20, seed=5)
    assert sample_scenarios(config, 20, seed=5) != sample_scenarios(config, 20, seed=6)


def test_real_grid_matches_the_real_runs(calibration):
    grid = real_grid_scenarios(MODEL, 600, calibration)
    keys = {(s["server"]["max_lora_rank"], s["server"]["max_loras"], s["server"]["max_cpu_loras"],
             round(sum(g["count"] * g["rate"] for g in s["adapters"]), 6)) for s in grid}
    assert (16, 8, 384, round(128 * (0.1 + 0.05 + 0.025), 6)) in keys
    assert (32, 64, 384, round(128 * (1.6 + 0.8 + 0.4), 6)) in keys
    assert all(a <= 192 for _, a, _, _ in keys)  # A_max 256+ with S_max 16 cannot start (memory)
    s = next(x for x in grid if x["server"]["max_cpu_loras"] == 32 and x["server"]["max_lora_rank"] == 32)
    ranks, rates = expand_groups(s["adapters"])
    assert sorted(set(ranks)) == [8, 16, 32] and ranks.count(8) == 11
    assert sorted({r: rates.count(r) for r in set(rates)}.values()) == [10, 11, 11]


@pytest.mark.parametrize("pattern", ["equal", "levels", "lognormal", "powerlaw"])
def test_rate_patterns_keep_the_total(pattern):
    rates = spread_rates(np.random.default_rng(0), 12.0, 100, pattern)
    assert len(rates) == 100 and (rates > 0).all()
    assert rates.sum() == pytest.approx(12.0, rel=1e-3)


def test_bad_knobs_are_named():
    with pytest.raises(ScenarioError, match="dataset.load_range"):
        SamplerConfig(MODEL, load_range=(2.0, 1.0))
    with pytest.raises(ScenarioError, match="server.max_loras: 9"):
        make_scenario(MODEL, [8] * 4, [0.1] * 4, 9)
    with pytest.raises(ScenarioError, match="rate pattern: unknown 'zipfy'"):
        spread_rates(np.random.default_rng(0), 1.0, 4, "zipfy")


def test_grid_variants_use_the_real_server_configurations_with_other_traffic(calibration):
    from adaptwin.dataset.sampler import REAL_A_MAX, REAL_RANKS, REAL_SERVED, grid_variant_scenarios

    config = SamplerConfig(MODEL, duration_s=600)
    cal = calibration
    variants = grid_variant_scenarios(config, 30, seed=4, calibration=cal)
    assert len(variants) == 30 and variants == grid_variant_scenarios(config, 30, seed=4, calibration=cal)
    assert [scenario_id(s) for s in variants] != [scenario_id(s) for s in grid_variant_scenarios(config, 30, seed=5,
                                                                                             calibration=cal)]
    for s in variants:
        served = sum(g["count"] for g in s["adapters"])
        ranks = {g["rank"] for g in s["adapters"]}
        s_max, max_loras = s["server"]["max_lora_rank"], s["server"]["max_loras"]
        assert served in REAL_SERVED and max_loras in REAL_A_MAX[s_max] and max_loras <= served
        assert ranks == set(REAL_RANKS[s_max]) and not cal.memory_error(max_loras, s_max)
    with pytest.raises(ScenarioError, match="grid_variants"):
        grid_variant_scenarios(config, -1)
