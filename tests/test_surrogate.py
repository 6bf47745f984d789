"""Surrogate features, training, save/load, fast evaluator, evaluation metrics (on a toy twin's data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_sweep import toy_simulate

from adaptwin.calibration.costs import load_calibration
from adaptwin.dataset import SamplerConfig, real_grid_scenarios, sample_scenarios
from adaptwin.dataset.sampler import capacity_rate
from adaptwin.rules import smape_pct
from adaptwin.surrogate import PAPER_FEATURES, FeatureError, gpu_features, load
from adaptwin.surrogate.evaluate import (
    EvalSet,
    classification_metrics,
    evaluate,
    unseen_configs,
)
from adaptwin.surrogate.features import (
    capacity,
    derived_features,
    feature_names,
    feature_row,
    features_frame,
    kv_capacity,
    matrix_from_paper,
    real_run_features,
)
from adaptwin.surrogate.model import OUTPUT_COLUMNS, SMALL_BATCH, inverse_transform
from adaptwin.surrogate.train import train_surrogates, transform
from adaptwin.sweep import load_dataset, run_sweep
from adaptwin.twin.scenario import scenario_id

MODEL = "llama-3.1-8b-instruct"
CALIBRATION = load_calibration(Path(__file__).parent / "fixtures" / "calibration_llama_example.json")


def test_gpu_features_by_hand():
    f = gpu_features([8, 16, 16, 32], [1.0, 2.0, 3.0, 2.0], 2)
    assert tuple(f)[:7] == PAPER_FEATURES
    assert f["sum_rate"] == 8.0 and f["std_rate"] == pytest.approx(np.std([1, 2, 3, 2]))
    assert (f["max_size"], f["mean_size"]) == (32.0, 18.0) and f["std_size"] == pytest.approx(np.std([8, 16, 16, 32]))
    assert (f["served_adapters"], f["adapter_slots"]) == (4.0, 2.0)
    assert (f["mean_rate"], f["rate_per_slot"], f["slot_fraction"]) == (2.0, 4.0, 0.5)
    grouped = gpu_features([8, 16, 32], [1.0, 2.5, 2.0], 2, counts=[1, 2, 1])
    assert grouped["sum_rate"] == 8.0 and grouped["mean_size"] == 18.0
    with_kv = gpu_features([8, 16], [1.0, 1.0], 2, calibration=CALIBRATION)
    assert with_kv["kv_capacity_tokens"] == CALIBRATION.kv_capacity_tokens(2, 16)
    assert with_kv["capacity_rate"] == capacity_rate(CALIBRATION, 2, 16, 2) > 0
    assert with_kv["load_ratio"] == pytest.approx(2.0 / with_kv["capacity_rate"])


def test_array_capacity_matches_the_scalar_proxy():
    slots, s_max, served = np.array([8, 32, 8] * 10), np.array([16, 32, 16] * 10), np.array([64, 32, 64] * 10)
    got = capacity(CALIBRATION, slots, s_max, served)
    assert got.tolist() == [capacity_rate(CALIBRATION, int(a), int(r), int(n)) for a, r, n in zip(slots, s_max, served, strict=True)]


@pytest.mark.parametrize("kind", ["log", "ratio", "log_ratio", "log_capacity_ratio"])
def test_throughput_transforms_round_trip(kind):
    y, sum_rate = np.array([12.0, 400.0, 9000.0]), np.array([0.1, 2.0, 40.0])
    back = inverse_transform(kind, transform("total_throughput", kind, y, sum_rate, 420.0), sum_rate, 420.0)
    assert back == pytest.approx(y)
    if kind in ("log_ratio", "log_capacity_ratio"):  # a GPU serving exactly its ideal throughput maps to 0
        assert transform("total_throughput", kind, sum_rate * 420.0, sum_rate, 420.0) == pytest.approx(0.0)


def test_gpu_features_reject_bad_input():
    with pytest.raises(FeatureError, match="rates: negative"):
        gpu_features([8, 8], [0.1, -1.0], 1)
    with pytest.raises(FeatureError, match="max_loras: expected >= 1, got 0"):
        gpu_features([8], [0.1], 0)
    with pytest.raises(FeatureError, match="lengths 2/1/2"):
        gpu_features([8, 8], [0.1], 1)


def test_real_run_features_cycle_ranks_and_expand_rates():
    runs = pl.DataFrame({"run_id": ["r"], "served_adapters": [5], "max_loras": [2], "adapter_ranks": [[8, 16]],
                         "adapter_rates": [[0.1, 0.4]], "adapter_rate_counts": [[3, 2]]})
    f = real_run_features(runs).row(0, named=True)
    expected = gpu_features([8, 16, 8, 16, 8], [0.1, 0.1, 0.1, 0.4, 0.4], 2)
    assert f == pytest.approx(expected)
    with pytest.raises(FeatureError, match="run 'r'"):
        real_run_features(runs.with_columns(served_adapters=pl.lit(6)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("surrogate")
    scenarios = real_grid_scenarios(MODEL, 60, CALIBRATION) + sample_scenarios(
        SamplerConfig(MODEL, duration_s=60), 160, seed=2, calibration=CALIBRATION)
    run_sweep(scenarios, root / "dataset", simulate=toy_simulate, progress=False)
    dataset = load_dataset(root / "dataset")
    result = train_surrogates(dataset, MODEL, root / "models" / MODEL, calibration=CALIBRATION, n_search=2,
                              max_iterations=150, threads=1)
    return result, dataset, root


def test_features_frame_is_gpu_features_row_by_row(trained):
    _, dataset, _ = trained
    frame = features_frame(dataset.head(5), CALIBRATION)
    for i, row in enumerate(dataset.head(5).iter_rows(named=True)):
        expected = gpu_features(row["group_ranks"], row["group_rates"], row["max_loras"],
                                counts=row["group_counts"], calibration=CALIBRATION)
        assert frame.row(i, named=True) == pytest.approx(expected)


def test_saved_surrogate_predicts_like_the_trained_one(trained):
    result, _, root = trained
    loaded = load(MODEL, root / "models")
    features = result.data.frame.select(PAPER_FEATURES)  # the paper's seven columns are enough
    a, b = result.surrogate.predict(features), loaded.predict(features)
    assert a.columns == list(OUTPUT_COLUMNS) and a.height == features.height
    assert a.equals(b)
    assert (a["total_throughput"] > 0).all() and a["starvation_probability"].is_between(0, 1).all()
    assert loaded.metadata["feature_names"][:7] == list(PAPER_FEATURES)


def test_fast_and_catboost_evaluators_agree(trained):
    result, _, _ = trained
    s = result.surrogate
    x = s.matrix(result.data.frame.select(PAPER_FEATURES))
    native = np.column_stack([s.models[t].predict(x, prediction_type="RawFormulaVal") for t in s._order])
    np.testing.assert_allclose(s._fast.raw(x), native, rtol=1e-9, atol=1e-9)
    small = s.predict(result.data.frame.select(PAPER_FEATURES)[:SMALL_BATCH])
    large = s.predict(result.data.frame.select(PAPER_FEATURES))[:SMALL_BATCH]
    np.testing.assert_allclose(small["total_throughput"], large["total_throughput"], rtol=1e-9)
    one = s.predict_one(result.data.frame.row(0, named=True))
    assert one["total_throughput"] == pytest.approx(large["total_throughput"][0], rel=1e-9)
    assert one["starved"] == large["starved"][0]


def test_surrogate_learned_the_toy_twin(trained):
    result, _, _ = trained
    metrics, table = evaluate(result, None, baselines=("small_tree",), singles=5, batch_rows=500)
    held = metrics["heldout"]
    assert held["throughput_smape_pct"] < 15 and held["starvation_macro_f1"] > 0.8
    assert set(table["learner"]) == {"catboost", "small_tree"}
    assert metrics["ms_per_prediction_single"] > 0


def test_unseen_configs_refits_without_the_runs_configurations(trained):
    """Real runs = the toy twin at its grid configurations: the refits never saw those rows, so they score
    worse than the surrogate trained on them, yet stay close on a smooth toy twin."""
    result, dataset, _ = trained
    grid = dataset.filter(pl.col("scenario_id").is_in([scenario_id(s) for s in real_grid_scenarios(MODEL, 60, CALIBRATION)]))
    feats = features_frame(grid, CALIBRATION).select(PAPER_FEATURES)
    real = EvalSet("real_runs", feats, grid.select("total_throughput", "itl_mean_ms", "ttft_mean_ms", "starved"))
    out = unseen_configs(result, real, folds=3)
    assert out["n"] == grid.height and out["configs"] == feats.unique().height and out["folds"] == 3
    seen = smape_pct(grid["total_throughput"].to_numpy(), result.surrogate.predict(feats)["total_throughput"].to_numpy())
    assert seen <= out["throughput_smape_pct"] < 40
    assert out["throughput_smape_paper_pct"] == pytest.approx(out["throughput_smape_pct"] / 2)


def test_bad_feature_frame_names_the_field(trained):
    result, _, _ = trained
    frame = result.data.frame.select(PAPER_FEATURES).head(3)
    with pytest.raises(FeatureError, match="missing feature column.*adapter_slots"):
        result.surrogate.predict(frame.drop("adapter_slots"))
    with pytest.raises(FeatureError, match="row 1, field 'served_adapters': value 0.0"):
        result.surrogate.predict(frame.with_columns(served_adapters=pl.Series([4.0, 0.0, 5.0])))


def test_smape_conventions_and_classification_metrics():
    a, p = np.array([100.0, 200.0, 0.0]), np.array([110.0, 180.0, 0.0])
    usual = (10 / 105 + 20 / 190 + 0) / 3 * 100
    assert smape_pct(a, p) == pytest.approx(usual) and smape_pct(a, p, paper=True) == pytest.approx(usual / 2)
    m = classification_metrics(np.array([True, False, False, True]), np.array([True, False, True, True]))
    assert m["accuracy"] == 0.75 and m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert classification_metrics(np.array([False, False]), np.array([False, False]))["macro_f1"] == 0.5


def random_gpus(n: int, seed: int) -> pl.DataFrame:
    """``n`` random GPUs (the paper's seven features), edges included: no load, equal rates, one adapter,
    more slots than adapters, fractional counts, integer columns."""
    rng = np.random.default_rng(seed)
    served = rng.integers(1, 700, n).astype(float)
    served[::17] += 0.5
    mean_rate = np.exp(rng.uniform(np.log(1e-4), np.log(5.0), n))
    mean_rate[::11] = 0.0
    frame = pl.DataFrame({
        "sum_rate": mean_rate * served, "std_rate": mean_rate * rng.uniform(0, 2, n) * (np.arange(n) % 7 > 0),
        "max_size": rng.choice([8.0, 16.0, 32.0, 64.0], n), "mean_size": rng.uniform(8, 32, n),
        "std_size": rng.uniform(0, 8, n), "served_adapters": served,
        "adapter_slots": rng.integers(1, 800, n).astype(float),
    })
    return frame.with_columns(pl.col("max_size").cast(pl.Int64))


def test_one_row_path_gives_exactly_the_general_paths_numbers(trained):
    """`predict` answers a one-row frame with plain-float features (`Surrogate.predict_row`), `predict_one` too:
    both must give the very numbers of the frame path (feature matrix -> predictions -> frame), not close ones,
    so that placement's answers do not depend on how many GPUs it asks about at once."""
    s = trained[0].surrogate
    frame = random_gpus(300, seed=5)
    for i in range(frame.height):
        row = frame[i:i + 1]
        general = s.output_frame(s.predict_matrix(s.matrix(row)))
        fast = s.predict(row)
        assert fast.schema == general.schema and fast.rows() == general.rows(), i
        assert s.predict_one(row.row(0, named=True)) == general.row(0, named=True), i
    assert s.predict(frame[:0]).schema == s.output_frame(s.predict_matrix(s.matrix(frame[:1])))[:0].schema


def test_one_row_features_equal_the_array_features_exactly():
    """`feature_row` (plain floats) and `gpu_features` against `matrix_from_paper` on small arrays (at most 16
    rows: the path a one-row frame took before it had its own), with and without a calibration: same numbers to
    the bit. (Larger arrays take scipy's special functions for the physics features, equal to ~1e-15 only.)"""
    values = random_gpus(200, seed=6).to_numpy().astype(float)
    for calibration in (None, CALIBRATION):
        names = feature_names(calibration is not None)
        small = np.vstack([matrix_from_paper(values[i:i + 16], names, calibration) for i in range(0, 200, 16)])
        rows = [feature_row(tuple(v), names, calibration) for v in values.tolist()]
        assert np.array(rows).tobytes() == small.tobytes()
    f = gpu_features([8, 16, 16, 32], [1.0, 2.0, 3.0, 2.0], 2, calibration=CALIBRATION)
    array = derived_features({k: np.array([f[k]]) for k in PAPER_FEATURES}, CALIBRATION)
    assert {k: f[k] for k in array} == {k: float(v[0]) for k, v in array.items()}


def test_distinct_configurations_match_the_row_by_row_values():
    """`capacity` / `kv_capacity` over large arrays (distinct configurations by integer keys) against the
    per-row loop, fractional values (truncated, as `int` does) included."""
    rng = np.random.default_rng(8)
    slots, s_max = rng.integers(1, 200, 500).astype(float), rng.choice([8.0, 16.0, 32.0], 500)
    served = rng.integers(1, 600, 500) + rng.choice([0.0, 0.25, 0.75], 500)
    rows = [capacity(CALIBRATION, slots[i:i + 1], s_max[i:i + 1], served[i:i + 1])[0] for i in range(500)]
    assert capacity(CALIBRATION, slots, s_max, served).tolist() == rows
    assert kv_capacity(CALIBRATION, slots, s_max).tolist() == [
        float(CALIBRATION.kv_capacity_tokens(int(a), int(r))) for a, r in zip(slots, s_max, strict=True)]


def test_capacity_ratio_expresses_throughput_against_the_servable_load():
    from adaptwin.surrogate.model import SurrogateError, basis_rate

    names = feature_names(True)
    base = [gpu_features([16] * 8, [r] * 8, 8, calibration=CALIBRATION) for r in (0.01, 50.0)]
    x = np.array([[row[n] for n in names] for row in base])
    cap = base[1]["capacity_rate"]
    assert base[1]["sum_rate"] > cap > base[0]["sum_rate"]  # one light GPU, one far beyond its capacity
    assert basis_rate("log_capacity_ratio", x, names).tolist() == [base[0]["sum_rate"], cap]
    assert basis_rate("log_ratio", x, names).tolist() == [base[0]["sum_rate"], base[1]["sum_rate"]]
    # a starved GPU serving its full-batch capacity maps to 0, as a light GPU serving its offered load does
    served = np.array([base[0]["sum_rate"], cap]) * 420.0
    assert transform("total_throughput", "log_capacity_ratio", served, basis_rate("log_capacity_ratio", x, names),
                     420.0) == pytest.approx([0.0, 0.0])
    with pytest.raises(SurrogateError, match="needs the capacity_rate feature"):
        basis_rate("log_capacity_ratio", x[:, :10], feature_names(False))
