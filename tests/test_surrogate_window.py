"""A surrogate trained on twin rows of two simulated windows predicts the hour (the window as a feature)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_sweep import toy_simulate

from adaptwin.calibration.costs import load_calibration
from adaptwin.dataset import SamplerConfig, sample_scenarios
from adaptwin.surrogate import load
from adaptwin.surrogate.evaluate import heldout_set
from adaptwin.surrogate.features import REFERENCE_WINDOW_S, WINDOW_FEATURE, feature_names
from adaptwin.surrogate.train import prediction_window, prepare, save, train_surrogates
from adaptwin.sweep import load_dataset, run_sweep

MODEL = "llama-3.1-8b-instruct"
CALIBRATION = load_calibration(Path(__file__).parent / "fixtures" / "calibration_llama_example.json")
#: the toy's short-window bias: a short window serves this share of the hour's throughput
SHORT_SHARE = 0.75


def biased_toy(scenario: dict) -> dict:
    """`toy_simulate` whose short windows under-report throughput by `SHORT_SHARE` (as dropped requests do)."""
    out = toy_simulate(scenario)
    if scenario["duration_s"] < REFERENCE_WINDOW_S:
        out["total_throughput"] *= SHORT_SHARE
        out["starved"] = out["total_throughput"] < 0.9 * out["ideal_throughput"]
    return out


def sweep(tmp: Path, duration: float, n: int, seed: int) -> pl.DataFrame:
    scenarios = sample_scenarios(SamplerConfig(MODEL, duration_s=duration), n, seed=seed, calibration=CALIBRATION)
    run_sweep(scenarios, tmp / str(int(duration)), simulate=biased_toy, progress=False)
    return load_dataset(tmp / str(int(duration)))


@pytest.fixture(scope="module")
def two_windows(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("window")
    hour, short = sweep(tmp, REFERENCE_WINDOW_S, 60, seed=1), sweep(tmp, 600.0, 180, seed=2)
    rows = pl.concat([hour, short], how="vertical_relaxed")
    result = train_surrogates(rows, MODEL, calibration=CALIBRATION, n_search=1, max_iterations=120, threads=1, cv_folds=2,
                              throughput_transform="log_ratio", test_fraction=0.25)
    return result, sweep(tmp, REFERENCE_WINDOW_S, 60, seed=3)


def test_one_window_adds_no_feature(tmp_path):
    data = prepare(sweep(tmp_path, 600.0, 12, seed=4), CALIBRATION)
    assert WINDOW_FEATURE not in data.feature_names and data.feature_names[:len(feature_names(True))] == feature_names(True)
    assert feature_names(True, window=True) == (*feature_names(True), WINDOW_FEATURE)


def test_two_windows_train_on_the_window_and_predict_the_hour(two_windows):
    result, fresh = two_windows
    assert result.surrogate.feature_names[-1] == WINDOW_FEATURE
    assert (result.surrogate.matrix(_paper(fresh))[:, -1] == REFERENCE_WINDOW_S).all()
    predicted = result.surrogate.predict(_paper(fresh))["total_throughput"].to_numpy()
    truth = fresh["total_throughput"].to_numpy()
    bias = float(np.median(predicted / truth))
    # the short rows are three quarters of the data and 25 % low; predicting the hour means no such bias
    assert abs(bias - 1.0) < 0.08, bias
    assert abs(bias - SHORT_SHARE) > 0.15


def test_held_out_rows_are_the_hours_only(two_windows):
    result, _ = two_windows
    held = heldout_set(result)
    windows = result.data.frame[result.test_idx][WINDOW_FEATURE]
    assert (windows < REFERENCE_WINDOW_S).any()  # the split did draw short rows...
    assert held.features.height == int((windows == REFERENCE_WINDOW_S).sum())  # ...and scoring leaves them out


def test_one_row_and_batch_paths_agree_with_the_window(two_windows):
    result, fresh = two_windows
    frame = _paper(fresh)
    batch = result.surrogate.predict(frame)
    for i in range(5):
        one = result.surrogate.predict(frame[i])
        assert one["total_throughput"][0] == pytest.approx(batch["total_throughput"][i], rel=1e-6)


def test_predictions_are_for_the_longest_window_trained_on(tmp_path, two_windows):
    result, fresh = two_windows
    assert result.surrogate.metadata["predict_window_s"] == REFERENCE_WINDOW_S
    reloaded = load(MODEL, save(result.surrogate, tmp_path / MODEL).parent)
    assert reloaded.window_s == REFERENCE_WINDOW_S
    assert reloaded.predict(_paper(fresh)).equals(result.surrogate.predict(_paper(fresh)))
    short_only = prepare(pl.concat([sweep(tmp_path, 300.0, 12, seed=5), sweep(tmp_path, 600.0, 12, seed=6)]),
                         CALIBRATION)
    assert prediction_window(short_only) == 600.0


def _paper(dataset: pl.DataFrame) -> pl.DataFrame:
    from adaptwin.surrogate.features import PAPER_FEATURES, features_frame

    return features_frame(dataset).select(PAPER_FEATURES)


def bursty_toy(scenario: dict) -> dict:
    """`toy_simulate` whose drifting ("unpredictable") arrivals offer a quarter more than the nominal rates."""
    out = toy_simulate(scenario)
    if scenario["arrivals"]["kind"] == "unpredictable":
        out["total_throughput"] *= 1.25
    return out


def test_the_arrival_kind_is_read_when_given_and_poisson_by_default(tmp_path):
    from adaptwin.surrogate.evaluate import twin_set
    from adaptwin.surrogate.features import BURSTY_FEATURE

    config = SamplerConfig(MODEL, duration_s=60.0, unpredictable_fraction=0.5)
    run_sweep(sample_scenarios(config, 240, seed=7, calibration=CALIBRATION), tmp_path / "d", simulate=bursty_toy,
              progress=False)
    rows = load_dataset(tmp_path / "d")
    result = train_surrogates(rows, MODEL, calibration=CALIBRATION, n_search=1, max_iterations=120, threads=1,
                              cv_folds=2, throughput_transform="log_ratio", test_fraction=0.2)
    assert BURSTY_FEATURE in result.surrogate.feature_names
    test = twin_set(rows, "all")
    assert test.features[BURSTY_FEATURE].sum() > 0
    given = result.surrogate.predict(test.features)["total_throughput"].to_numpy()
    default = result.surrogate.predict(test.features.drop(BURSTY_FEATURE))["total_throughput"].to_numpy()
    bursty = test.features[BURSTY_FEATURE].to_numpy() == 1.0
    assert np.allclose(given[~bursty], default[~bursty])  # absent = Poisson
    assert np.median(given[bursty] / default[bursty]) > 1.1  # the drift's extra load is learnt, not averaged away
    one = result.surrogate.predict(test.features[int(np.flatnonzero(bursty)[0])])  # the one-row path reads it too
    assert one["total_throughput"][0] == pytest.approx(given[bursty][0], rel=1e-6)
