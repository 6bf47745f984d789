"""An exam GPU's truth as the mean of several twin runs (`adaptwin.surrogate.draws`): the means against an
independent calculation, the verdict on the mean, rows kept as swept, resumption and determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from adaptwin.calibration.costs import load_calibration
from adaptwin.surrogate.draws import mean_of_draws, replicas, with_draws
from adaptwin.surrogate.stage import SurrogateConfig
from adaptwin.surrogate.train import TrainingError
from adaptwin.sweep import load_dataset, run_sweep
from adaptwin.twin import simulate
from adaptwin.twin.scenario import make_scenario, scenario_id

FIXTURE = Path(__file__).parent / "fixtures" / "calibration_llama_example.json"
MODEL = "llama-3.1-8b-instruct"


def frame(rows: list[dict]) -> pl.DataFrame:
    base = {"error": None, "memory_error": False, "ideal_throughput": 100.0, "itl_mean_ms": 10.0,
            "ttft_mean_ms": 50.0, "scenario_json": "{}"}
    return pl.DataFrame([{**base, **r} for r in rows], schema_overrides={"error": pl.String})


def test_the_mean_covers_each_row_and_its_draws_and_the_verdict_is_taken_on_it():
    swept = frame([
        {"scenario_id": "a", "total_throughput": 80.0, "starved": True},
        {"scenario_id": "b", "total_throughput": 95.0, "starved": False},
        {"scenario_id": "m", "total_throughput": 0.0, "starved": False, "memory_error": True},
    ])
    extra = frame([
        {"scenario_id": "a1", "total_throughput": 100.0, "starved": False, "itl_mean_ms": 20.0},
        {"scenario_id": "a2", "total_throughput": 90.0, "starved": False},
        {"scenario_id": "b1", "total_throughput": 75.0, "starved": True},
        {"scenario_id": "m1", "total_throughput": 50.0, "starved": False},  # memory errors are deterministic
        {"scenario_id": "stale", "total_throughput": 1.0, "starved": True},  # a draw of another design
    ])
    parent = {"a1": "a", "a2": "a", "b1": "b", "m1": "m"}
    out = {r["scenario_id"]: r for r in mean_of_draws(swept, extra, parent).to_dicts()}
    assert out["a"]["total_throughput"] == pytest.approx(90.0) and not out["a"]["starved"]  # 90 is not < 0.9 x 100
    assert out["a"]["itl_mean_ms"] == pytest.approx(40.0 / 3) and out["a"]["twin_draws"] == 3
    assert out["a"]["throughput_sd"] == pytest.approx(np.std([80.0, 100.0, 90.0]))
    assert out["b"]["total_throughput"] == pytest.approx(85.0) and out["b"]["starved"]
    assert out["m"]["total_throughput"] == 0.0 and out["m"]["twin_draws"] == 1 and out["m"]["memory_error"]
    assert [r for r in out] == ["a", "b", "m"]


def test_the_verdict_on_the_mean_uses_the_tokens_that_arrived_when_fewer_than_the_ideal():
    """The twin's own rule (`rules.starvation_bar`): a GPU whose draws served all of a light realised load is
    not starved by it; rows swept without the tokens that arrived keep the nominal ideal."""
    swept = frame([
        {"scenario_id": "light", "total_throughput": 78.0, "offered_throughput": 80.0, "starved": False},
        {"scenario_id": "short", "total_throughput": 70.0, "offered_throughput": 95.0, "starved": True},
        {"scenario_id": "old", "total_throughput": 80.0, "offered_throughput": None, "starved": True},
    ])
    extra = frame([
        {"scenario_id": "light1", "total_throughput": 74.0, "offered_throughput": 76.0, "starved": False},
        {"scenario_id": "short1", "total_throughput": 72.0, "offered_throughput": 105.0, "starved": True},
        {"scenario_id": "old1", "total_throughput": 84.0, "offered_throughput": None, "starved": True},
    ])
    parent = {"light1": "light", "short1": "short", "old1": "old"}
    out = {r["scenario_id"]: r for r in mean_of_draws(swept, extra, parent).to_dicts()}
    assert out["light"]["offered_throughput"] == pytest.approx(78.0) and not out["light"]["starved"]  # 76 < 0.9 x 100
    assert out["short"]["starved"]  # 71 < 0.9 x min(100, 100)
    assert out["old"]["starved"]  # 82 < 0.9 x 100: no tokens-arrived column value, the ideal is the bar


def test_replicas_step_the_seed_and_name_their_row():
    swept = pl.DataFrame({"scenario_id": ["x"], "scenario_json": ['{"seed": 7, "model": "m"}']})
    copies, parent = replicas(swept, 3)
    assert [c["seed"] for c in copies] == [8, 9] and set(parent.values()) == {"x"} and len(parent) == 2


def test_with_draws_is_the_mean_of_independent_twin_runs_resumes_and_repeats(tmp_path):
    calibration = load_calibration(FIXTURE)
    scenarios = [make_scenario(MODEL, [8, 16], [0.4, 0.3], 2, duration_s=60.0),
                 make_scenario(MODEL, [8] * 6, [1.5] * 6, 4, arrivals="unpredictable", duration_s=60.0)]
    run_sweep(scenarios, tmp_path / "swept", calibration=calibration, progress=False)
    swept = load_dataset(tmp_path / "swept")
    out = with_draws(swept, tmp_path / "draws", calibration, 3)
    for row in out.to_dicts():
        scenario = next(s for s in scenarios if scenario_id(s) == row["scenario_id"])
        results = [simulate({**scenario, "seed": scenario["seed"] + i}, calibration) for i in range(3)]
        runs = [r["total_throughput"] for r in results]
        offered = np.mean([r["offered_throughput"] for r in results])
        assert row["total_throughput"] == pytest.approx(np.mean(runs)) and row["twin_draws"] == 3
        assert row["offered_throughput"] == pytest.approx(offered)
        assert row["starved"] == (np.mean(runs) < 0.9 * min(row["ideal_throughput"], offered))
    chunks = sorted((tmp_path / "draws").glob("chunk-*.parquet"))
    again = with_draws(swept, tmp_path / "draws", calibration, 3)
    assert sorted((tmp_path / "draws").glob("chunk-*.parquet")) == chunks  # nothing simulated twice
    assert again.equals(out)
    assert with_draws(swept, tmp_path / "none", calibration, 1) is swept


def test_exam_draws_below_one_are_refused():
    section = {"models": [MODEL], "n_search": 1, "max_iterations": 10, "test_fraction": 0.2, "seed": 0,
               "threads": 1, "throughput_transform": "log", "baselines": [], "real_runs_model": MODEL}
    assert SurrogateConfig.from_params({**section, "exam_draws": 3}).exam_draws == 3
    with pytest.raises(TrainingError, match="surrogates.exam_draws: expected >= 1, got 0"):
        SurrogateConfig.from_params({**section, "exam_draws": 0})
