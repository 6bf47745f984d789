"""Uncertainty sampling picks the GPUs on the starvation boundary and the stage retrains on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_sweep import toy_simulate

from adaptwin.calibration.costs import load_calibration
from adaptwin.dataset import SamplerConfig, sample_scenarios
from adaptwin.dataset.mixes import mix_scenarios
from adaptwin.rules import STARVATION_RATIO
from adaptwin.surrogate.active import pick_uncertain, scenario_features, uncertainty
from adaptwin.surrogate.stage import SurrogateConfig
from adaptwin.surrogate.stage import run_stage as run_surrogate_stage
from adaptwin.surrogate.train import TrainingError
from adaptwin.sweep import load_dataset, run_sweep

MODEL = "llama-3.1-8b-instruct"
FIXTURE = Path(__file__).parent / "fixtures" / "calibration_llama_example.json"
CALIBRATION = load_calibration(FIXTURE)
EDGE = 2.0  # req/s at which the stand-in surrogate is unsure


class EdgeSurrogate:
    """A stand-in surrogate whose verdict flips at `EDGE` req/s: starved above, served in full below."""

    model, calibration, tokens_per_request = MODEL, CALIBRATION, 400.0

    def predict(self, features: pl.DataFrame) -> pl.DataFrame:
        rate = features["sum_rate"].to_numpy()
        p = 1.0 / (1.0 + np.exp(-(rate - EDGE) * 8.0))
        share = np.where(rate > EDGE, EDGE / rate, 1.0)
        return pl.DataFrame({"total_throughput": share * rate * self.tokens_per_request,
                             "starvation_probability": p, "starved": p >= 0.5})


def test_uncertainty_peaks_on_the_boundary():
    features = pl.DataFrame({"sum_rate": [0.2, 1.0, EDGE, 6.0, 40.0]})
    score = uncertainty(EdgeSurrogate(), features)
    assert int(np.argmax(score)) == 2
    assert score[2] > 0.25 and score[0] < 0.01 and score[4] < 0.01  # p (1 - p) alone is 0.25 at the edge
    # the regressor read as a verdict: a share on the starvation line adds 0.25 even where the classifier is sure
    sure = EdgeSurrogate()
    sure.predict = lambda f: pl.DataFrame({"total_throughput": STARVATION_RATIO * f["sum_rate"] * 400.0,
                                           "starvation_probability": [0.0] * f.height, "starved": [False] * f.height})
    assert np.allclose(uncertainty(sure, features), 0.25)


def test_pick_keeps_the_candidates_nearest_the_edge():
    candidates = mix_scenarios(SamplerConfig(MODEL, duration_s=60), 60, seed=3, calibration=CALIBRATION)
    rates = scenario_features(candidates, CALIBRATION)["sum_rate"].to_numpy()
    picked, record = pick_uncertain(EdgeSurrogate(), candidates, 6)
    got = sorted(scenario_features(picked, CALIBRATION)["sum_rate"].to_list())
    distance = np.abs(np.log(rates / EDGE))
    nearest = sorted(rates[np.argsort(distance)[:6]].tolist())
    assert got == nearest  # independent: nearest in log-rate is most uncertain for this stand-in
    assert record["picked"] == 6 and record["picked_mean_uncertainty"] > record["pool_mean_uncertainty"]
    assert pick_uncertain(EdgeSurrogate(), candidates, 0)[0] == []


def test_stage_retrains_on_the_active_rows(tmp_path):
    (tmp_path / "calibration").mkdir()
    shutil.copy(FIXTURE, tmp_path / "calibration" / f"{MODEL}.json")
    scenarios = sample_scenarios(SamplerConfig(MODEL, duration_s=60), 80, seed=4, calibration=CALIBRATION)
    run_sweep(scenarios, tmp_path / "dataset" / MODEL, simulate=toy_simulate, progress=False)
    base = dict(models=[MODEL], n_search=1, max_iterations=60, test_fraction=0.2, seed=0, threads=1,
                throughput_transform="log", baselines=[], real_runs_model=MODEL, timing_singles=5, cv_folds=2)
    config = SurrogateConfig.from_params(dict(base, active_rounds=2, active_scenarios=3, active_pool=5,
                                              active_window_s=20.0))
    metrics = run_surrogate_stage(config, tmp_path)[MODEL]
    rounds = [load_dataset(tmp_path / "models" / MODEL / "active" / f"round-{r}") for r in range(2)]
    assert [r.height for r in rounds] == [3, 3] and (rounds[0]["duration_s"] == 20.0).all()
    assert [a["picked"] for a in metrics["active"]] == [3, 3] and metrics["active"][0]["pool"] == 15
    assert metrics["dataset_rows"] == 80 + 6  # retrained on the dataset and both rounds
    saved = json.loads((tmp_path / "metrics" / "surrogates.json").read_text())[MODEL]
    assert saved["active"][1]["seed"] != saved["active"][0]["seed"]


def test_stage_retrains_on_the_placement_rows(tmp_path):
    (tmp_path / "calibration").mkdir()
    shutil.copy(FIXTURE, tmp_path / "calibration" / f"{MODEL}.json")
    scenarios = sample_scenarios(SamplerConfig(MODEL, duration_s=60), 80, seed=4, calibration=CALIBRATION)
    run_sweep(scenarios, tmp_path / "dataset" / MODEL, simulate=toy_simulate, progress=False)
    extra = sample_scenarios(SamplerConfig(MODEL, duration_s=60), 7, seed=9, calibration=CALIBRATION)
    run_sweep(extra, tmp_path / "extra", simulate=toy_simulate, progress=False)
    seen = []

    def placement_rows(surrogate, data_dir):
        seen.append(surrogate.metadata["dataset_rows"])  # the first surrogate: trained on the dataset alone
        return load_dataset(tmp_path / "extra")

    grid = {"kinds": ["uniform"], "adapters": [30], "rank_mixes": ["8-16"], "multipliers": [3], "seed": 1}
    base = dict(models=[MODEL], n_search=1, max_iterations=60, test_fraction=0.2, seed=0, threads=1,
                throughput_transform="log", baselines=[], real_runs_model=MODEL, timing_singles=5, cv_folds=2,
                placement_train_groups=7, placement_train_grid=grid)
    config = SurrogateConfig.from_params(dict(base, placement_groups_grid={**grid, "seed": 0}))
    metrics = run_surrogate_stage(config, tmp_path, placement_rows=placement_rows)[MODEL]
    assert seen == [80]
    assert metrics["dataset_rows"] == 80 + 7 and metrics["placement_training"]["rows"] == 7
    # the exam's own workloads cannot be trained on
    with pytest.raises(TrainingError, match="placement_train_grid"):
        SurrogateConfig.from_params(dict(base, placement_groups_grid=grid)).train_grid()


def test_a_reused_search_refits_its_best_configuration_once():
    from adaptwin.surrogate.train import fit_target

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (120, 3))
    y = 3 * x[:, 0] - x[:, 1] + rng.normal(0, 0.05, 120)
    first, record = fit_target(x, y, False, n_search=2, max_iterations=80, seed=0, threads=1, folds=2)
    assert len(record["trials"]) == 2 and "reused" not in record
    again, reused = fit_target(np.vstack([x, x[:10]]), np.concatenate([y, y[:10]]), False, n_search=2,
                               max_iterations=80, seed=0, threads=1, folds=2, searched=record)
    assert reused["reused"] and reused["best"] == record["best"]
    assert again.tree_count_ == record["best"]["iterations"]
    assert again.get_params()["depth"] == first.get_params()["depth"]
