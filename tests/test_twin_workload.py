"""Arrivals and request lengths: the distributions the twin draws match what they claim."""

from __future__ import annotations

import numpy as np
import pytest
from twin_helpers import scenario, write_trace

from adaptwin.twin.arrivals import RATE_SPAN, make_workload
from adaptwin.twin.lengths import SHAREGPT_MAX_TOTAL, sample_lengths, sharegpt_means
from adaptwin.twin.scenario import parse_scenario


def parsed(**kw):
    return parse_scenario(scenario(**kw), check_model=False)


@pytest.mark.parametrize("shape", ["pool", "quantiles"])
def test_sharegpt_matches_recorded_statistics(shape):
    rng = np.random.default_rng(1)
    spec = {"kind": "sharegpt", "input_mean": 251, "output_mean": 231, "shape": shape}
    p, o = sample_lengths(spec, 400_000, rng, "x")
    assert p.mean() == pytest.approx(251, rel=0.02) and o.mean() == pytest.approx(231, rel=0.02)
    # quartiles: the pool was fitted to the means only, so these are an independent check of its tokens
    assert np.percentile(p, 25) == pytest.approx(23, rel=0.05) and np.percentile(p, 75) == pytest.approx(423, rel=0.03)
    assert np.percentile(o, 25) == pytest.approx(27, rel=0.08) and np.percentile(o, 75) == pytest.approx(357, rel=0.03)
    assert p.min() >= 4 and p.max() <= 1024 and (p + o).max() <= SHAREGPT_MAX_TOTAL and o.min() >= 1


def test_sharegpt_pool_keeps_the_negative_prompt_answer_correlation():
    p, o = sample_lengths({"kind": "sharegpt"}, 100_000, np.random.default_rng(5), "x")
    assert np.corrcoef(np.log(p), np.log(o))[0, 1] < -0.3


def test_sharegpt_rescaled_to_the_llama3_pool():
    means = sharegpt_means("llama-3.1-8b-instruct", {})
    assert means == pytest.approx((18042231 / 81000, 15885629 / 81000))
    p, o = sample_lengths({"kind": "sharegpt"}, 400_000, np.random.default_rng(2), "llama-3.1-8b-instruct")
    assert p.mean() == pytest.approx(means[0], rel=0.02) and o.mean() == pytest.approx(means[1], rel=0.02)


def test_poisson_counts_per_adapter():
    sc = parsed(served=30, rates=(1.0, 0.5, 0.1), duration=2000.0)
    w = make_workload(sc)
    counts = np.bincount(w.adapters, minlength=30)
    expected = sc.rates * sc.duration_s
    # each count is Poisson: within 5 sigma of its mean
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    assert np.all(np.diff(w.times) >= 0) and w.times.min() >= 0 and w.times.max() < sc.duration_s
    gaps = np.diff(w.times[w.adapters == 0])
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)  # exponential gaps


def test_unpredictable_keeps_rates_in_band_and_is_burstier():
    sc = parsed(served=12, rates=(1.0, 1.0, 1.0), duration=3600.0, arrivals={"kind": "unpredictable"})
    w = make_workload(sc)
    for a in range(12):
        per_period = np.bincount((w.times[w.adapters == a] // 300).astype(int), minlength=12)
        assert per_period.max() <= 300 * RATE_SPAN * 1.3 and per_period.min() >= 0
    poisson = make_workload(parsed(served=12, rates=(1.0, 1.0, 1.0), duration=3600.0))
    assert len(w) != len(poisson)
    again = make_workload(sc)
    np.testing.assert_array_equal(w.times, again.times)


def test_trace_replay_and_mappings(tmp_path):
    rows = [(0.5 * i, 10 + i, 1 + i) for i in range(12)]
    trace = str(write_trace(tmp_path / "t.csv", rows))
    rr = parsed(max_loras=3, served=3, duration=5.0, arrivals={"kind": "trace", "path": trace, "mapping": "round_robin"},
                lengths={"kind": "trace", "path": trace})
    w = make_workload(rr)
    np.testing.assert_allclose(w.times, [0.5 * i for i in range(10)])  # rows at or after 5 s dropped
    np.testing.assert_array_equal(w.adapters, np.arange(10) % 3)
    np.testing.assert_array_equal(w.prompts, 10 + np.arange(10))
    np.testing.assert_array_equal(w.outputs, 1 + np.arange(10))
    weighted = parsed(max_loras=3, served=3, rates=(1.0, 0.0, 0.0), duration=5.0, arrivals={"kind": "trace", "path": trace})
    assert set(make_workload(weighted).adapters.tolist()) == {0}


def test_real_azure_trace_replays():
    from adaptwin import paths

    path = paths.resolve("../shared/traces/azure_llm_2023_code.csv")
    if not path.exists():
        pytest.skip("shared traces not available")
    sc = parsed(max_loras=6, served=6, duration=600.0, arrivals={"kind": "trace", "path": str(path)},
                lengths={"kind": "trace", "path": str(path)})
    w = make_workload(sc)
    assert 500 < len(w) < 5000 and w.prompts.mean() > 500
