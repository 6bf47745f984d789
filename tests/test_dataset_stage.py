"""The dataset and surrogate stages end to end on a tiny budget: real twin for the dataset, files where the
contracts say, headline keys the claims report reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from test_sweep import toy_simulate

from adaptwin.calibration.costs import load_calibration
from adaptwin.dataset import SamplerConfig, real_grid_scenarios, sample_scenarios
from adaptwin.dataset.mixes import mix_scenarios
from adaptwin.dataset.stage import DatasetConfig, run_stage
from adaptwin.figures.surrogates import model_figures
from adaptwin.report import lookup
from adaptwin.surrogate import load
from adaptwin.surrogate.stage import SurrogateConfig
from adaptwin.surrogate.stage import run_stage as run_surrogate_stage
from adaptwin.sweep import load_dataset, run_sweep

MODEL = "llama-3.1-8b-instruct"
FIXTURE = Path(__file__).parent / "fixtures" / "calibration_llama_example.json"


def _calibration_dir(root: Path) -> Path:
    target = root / "calibration"
    target.mkdir(parents=True)
    shutil.copy(FIXTURE, target / f"{MODEL}.json")
    return target


def test_dataset_stage_with_the_real_twin(tmp_path):
    knobs = dict(models=[MODEL], n_scenarios=[5], duration_s=40.0, seed=0, include_real_grid=False, engine="serial")
    checked = DatasetConfig.from_params(dict(knobs, duration_check_scenarios=2, duration_check_short_s=10.0))
    summary = run_stage(checked, tmp_path, _calibration_dir(tmp_path), progress=False)
    entry = summary[MODEL]
    assert entry["rows"] == 5 and entry["errors"] == 0 and entry["evaluated_now"] == 5
    assert entry["scenarios_per_s"] > 0 and entry["duration_check"]["scenarios"] == 2
    assert json.loads((tmp_path / "dataset" / "summary.json").read_text())[MODEL]["rows"] == 5
    again = run_stage(DatasetConfig.from_params(knobs), tmp_path, tmp_path / "calibration", progress=False)
    assert again[MODEL]["evaluated_now"] == 0 and again[MODEL]["rows"] == 5  # resumed, nothing recomputed


def test_dataset_stage_sweeps_mixes_and_the_fresh_set_apart(tmp_path):
    config = DatasetConfig.from_params(dict(models=[MODEL], n_scenarios=[0], duration_s=30.0, seed=0,
                                            include_real_grid=False, engine="serial", mix_scenarios=[3],
                                            fresh_scenarios=2))
    entry = run_stage(config, tmp_path, _calibration_dir(tmp_path), progress=False)[MODEL]
    assert entry["rows"] == 3 and entry["fresh"]["rows"] == 2
    train_ids = set(load_dataset(tmp_path / "dataset" / MODEL)["scenario_id"])
    assert train_ids.isdisjoint(load_dataset(tmp_path / "dataset" / "fresh" / MODEL)["scenario_id"])


def test_short_mixes_are_the_hour_mixes_again_over_a_shorter_window(tmp_path):
    config = DatasetConfig.from_params(dict(models=[MODEL], n_scenarios=[0], duration_s=40.0, seed=0,
                                            include_real_grid=False, engine="serial", mix_scenarios=[3],
                                            short_mix_scenarios=[5], short_window_s=10.0))
    entry = run_stage(config, tmp_path, _calibration_dir(tmp_path), progress=False)[MODEL]
    assert entry["rows"] == 8 and entry["rows_by_window_s"] == {"10": 5, "40": 3}
    rows = load_dataset(tmp_path / "dataset" / MODEL)
    long, short = (rows.filter(pl.col("duration_s") == w) for w in (40.0, 10.0))
    # same draws: every hour mix has a short twin with the same adapters and A_max (the first three draws;
    # rates may be raised to the short window's floor of requests)
    def shape(frame: pl.DataFrame) -> list[tuple]:
        return sorted((r["max_loras"], sorted(r for r, n in zip(r["group_ranks"], r["group_counts"], strict=True)
                                              for _ in range(n))) for r in frame.iter_rows(named=True))

    assert set(map(str, shape(long))) <= set(map(str, shape(short)))
    assert entry["twin_cpu_s_by_window_s"]["10"] > 0
    bad = DatasetConfig.from_params(dict(models=[MODEL], n_scenarios=[0], duration_s=40.0, include_real_grid=False,
                                         engine="serial", short_mix_scenarios=[2], short_window_s=40.0))
    with pytest.raises(ValueError, match="short_window_s: 40.0 is not shorter than duration_s 40.0"):
        run_stage(bad, tmp_path / "bad", _calibration_dir(tmp_path / "bad"), progress=False)


def test_surrogate_stage_writes_models_metrics_and_figures(tmp_path):
    calibration = load_calibration(_calibration_dir(tmp_path) / f"{MODEL}.json")
    scenarios = real_grid_scenarios(MODEL, 60, calibration) + sample_scenarios(
        SamplerConfig(MODEL, duration_s=60), 60, seed=4, calibration=calibration)
    run_sweep(scenarios, tmp_path / "dataset" / MODEL, simulate=toy_simulate, progress=False)
    fresh = mix_scenarios(SamplerConfig(MODEL, duration_s=60), 20, seed=1, laws=("pareto",), calibration=calibration)
    run_sweep(fresh, tmp_path / "dataset" / "fresh" / MODEL, simulate=toy_simulate, progress=False)
    rows = load_dataset(tmp_path / "dataset" / MODEL).head(6)
    runs = pl.DataFrame({  # three "real runs" in the runs.parquet layout
        "run_id": ["a", "b", "c"], "family": ["real_results"] * 3, "model": [MODEL] * 3, "status": ["ok"] * 3,
        "served_adapters": [8, 16, 32], "max_loras": [8, 8, 16], "adapter_ranks": [[8, 16]] * 3,
        "adapter_rates": [[0.1, 0.05]] * 3, "adapter_rate_counts": [[4, 4], [8, 8], [16, 16]],
        "total_throughput": rows["total_throughput"][:3], "itl_mean_ms": [20.0, 25.0, 30.0],
        "ttft_mean_ms": [40.0, 50.0, 60.0]})
    (tmp_path / "measurements").mkdir()
    runs.write_parquet(tmp_path / "measurements" / "runs.parquet")
    config = SurrogateConfig.from_params(dict(
        models=[MODEL], n_search=1, max_iterations=60, test_fraction=0.2, seed=0, threads=1,
        throughput_transform="log", baselines=["small_tree"], real_runs_model=MODEL, timing_singles=5))
    metrics = run_surrogate_stage(config, tmp_path,
                                  draw=lambda outcome: model_figures(outcome, tmp_path / "figures" / "surrogates"))
    saved = json.loads((tmp_path / "metrics" / "surrogates.json").read_text())
    for key in ("real_runs.throughput_smape_pct", "real_runs.starvation_macro_f1", "ms_per_prediction_single",
                "ms_per_prediction_batched", "heldout.throughput_smape_pct"):
        assert lookup(saved, f"{MODEL}.{key}") is not None, key
    assert metrics[MODEL]["real_runs"]["n"] == 3
    assert set(saved[MODEL]["learners"]) == {"catboost", "small_tree"}
    assert load(MODEL, tmp_path / "models").metadata["metrics"]["real_runs"]["n"] == 3
    figures = {p.name for p in (tmp_path / "figures" / "surrogates").iterdir()}
    assert {f"real_runs_{MODEL}.png", f"feature_importance_{MODEL}.pdf", f"heldout_{MODEL}.png",
            f"breakdown_{MODEL}.png"} <= figures
    assert saved[MODEL]["fresh_heterogeneous"]["n"] == 20 and "fresh_heterogeneous" in saved[MODEL]["learners"]["small_tree"]
    assert sum(r["n"] for r in saved[MODEL]["breakdown"] if r["by"] == "a_max") == 20


def test_notebook_parameters_match_params_yaml():
    """DVC passes every key of a params.yaml section to its notebook: each must be a declared parameter."""
    import nbformat
    import yaml

    root = Path(__file__).parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    for notebook, section in (("04_dataset", "dataset"), ("05_surrogates", "surrogates")):
        nb = nbformat.read(root / "notebooks" / f"{notebook}.ipynb", as_version=4)
        cell = next(c for c in nb.cells if c.cell_type == "code")
        assert "parameters" in cell.metadata.get("tags", [])
        declared: dict = {}
        exec(cell.source, declared)
        assert declared["data_dir"] == ".smoke/data"
        assert sorted(set(params[section]) - set(declared)) == [], notebook
