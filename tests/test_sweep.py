"""The sweep runner: resume without duplicates or losses, serial == Dask, a malformed scenario fails alone."""

from __future__ import annotations

import polars as pl
import pytest

from adaptwin.dataset import SamplerConfig, sample_scenarios
from adaptwin.sweep import TIMING_COLUMNS, chunk_files, done_ids, load_dataset, run_sweep, twin_fingerprint
from adaptwin.twin.scenario import make_scenario, scenario_id


def toy_simulate(scenario: dict) -> dict:
    """A deterministic stand-in for the twin with the contract's keys; refuses what the twin refuses."""
    server = scenario["server"]
    served = sum(g["count"] for g in scenario["adapters"])
    if server["max_loras"] > served:
        raise ValueError(f"server.max_loras: {server['max_loras']} > served adapters {served}")
    if any(g["rank"] > server["max_lora_rank"] for g in scenario["adapters"]):
        raise ValueError("adapters.rank: above server.max_lora_rank")
    ideal = sum(g["count"] * g["rate"] for g in scenario["adapters"]) * 420.0
    total = min(ideal, 5000.0 * server["max_loras"] / served + 1000.0)
    out = dict.fromkeys(["input_throughput", "output_throughput", "request_throughput", "ttft_mean_ms",
                         "ttft_median_ms", "ttft_p99_ms", "itl_mean_ms", "itl_median_ms", "itl_p99_ms",
                         "mean_batch_size"], total / 7.0)
    out.update(total_throughput=total, ideal_throughput=ideal, starved=total < 0.9 * ideal, memory_error=False,
               arrived_requests=served, finished_requests=served, preemptions=0, adapter_loads=scenario["seed"] % 7,
               wall_time_s=0.001)
    return out


@pytest.fixture
def scenarios() -> list[dict]:
    return sample_scenarios(SamplerConfig("llama-3.1-8b-instruct", duration_s=60, served_range=(8, 40)), 23, seed=3)


def _stable(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop(TIMING_COLUMNS).sort("scenario_id")


def test_serial_sweep_writes_every_row_once(tmp_path, scenarios):
    report = run_sweep(scenarios, tmp_path, simulate=toy_simulate, chunk_size=5, progress=False)
    data = load_dataset(tmp_path)
    assert report.evaluated == data.height == len(scenarios)
    assert report.chunks_written == 5  # 23 rows in chunks of 5
    assert sorted(data["scenario_id"]) == sorted(scenario_id(s) for s in scenarios)
    assert data["total_throughput"].null_count() == 0


def test_resume_after_interruption_has_no_duplicates_or_losses(tmp_path, scenarios):
    calls = {"n": 0}

    def dying(scenario: dict) -> dict:
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt  # the user presses Ctrl-C mid-chunk
        return toy_simulate(scenario)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(scenarios, tmp_path, simulate=dying, chunk_size=5, batch_size=1, progress=False)
    partial = done_ids(tmp_path)
    assert len(partial) == 12  # finished rows were flushed on the way out
    second = run_sweep(scenarios, tmp_path, simulate=toy_simulate, chunk_size=5, progress=False)
    assert second.skipped == 12 and second.evaluated == len(scenarios) - 12
    data = load_dataset(tmp_path, include_errors=True)
    assert data["scenario_id"].n_unique() == data.height == len(scenarios)
    fresh = tmp_path / "fresh"
    run_sweep(scenarios, fresh, simulate=toy_simulate, chunk_size=7, progress=False)
    assert _stable(data).equals(_stable(load_dataset(fresh, include_errors=True)))
    third = run_sweep(scenarios, tmp_path, simulate=toy_simulate, progress=False)
    assert third.evaluated == 0 and third.skipped == len(scenarios)


def test_rows_of_another_twin_are_retired_not_reused(tmp_path, scenarios):
    """A recalibrated twin must not resume on the old twin's rows: they move to stale/<fingerprint>/."""
    first = run_sweep(scenarios, tmp_path, simulate=toy_simulate, chunk_size=5, progress=False, fingerprint="a" * 64)
    again = run_sweep(scenarios, tmp_path, simulate=toy_simulate, chunk_size=5, progress=False, fingerprint="a" * 64)
    assert first.evaluated == len(scenarios) and again.evaluated == 0  # same twin: resume
    old_files = sorted(p.name for p in chunk_files(tmp_path))
    recal = run_sweep(scenarios, tmp_path, simulate=toy_simulate, chunk_size=5, progress=False, fingerprint="b" * 64)
    assert recal.skipped == 0 and recal.evaluated == len(scenarios)
    assert sorted(p.name for p in (tmp_path / "stale" / ("a" * 16)).glob("chunk-*.parquet")) == old_files
    assert load_dataset(tmp_path).height == len(scenarios)  # only the new twin's rows are loaded


def test_twin_fingerprint_follows_the_calibration_content():
    from pathlib import Path

    from adaptwin.calibration.costs import from_dict, load_calibration

    cal = load_calibration(Path(__file__).parent / "fixtures" / "calibration_llama_example.json")
    tweaked = dict(cal.raw)
    tweaked["step"] = {**cal.raw["step"], "params": {**cal.raw["step"]["params"], "intercept": 0.02}}
    assert twin_fingerprint(cal) == twin_fingerprint(from_dict(dict(cal.raw)))
    assert twin_fingerprint(cal) != twin_fingerprint(from_dict(tweaked))


def test_malformed_scenario_fails_alone(tmp_path, scenarios):
    bad = make_scenario("llama-3.1-8b-instruct", [8, 16], [0.1, 0.2], 2)
    bad["server"]["max_lora_rank"] = 8  # rank 16 above S_max
    garbage = {"model": "llama-3.1-8b-instruct", "adapters": "not a list"}
    report = run_sweep([*scenarios[:4], bad, garbage, *scenarios[4:8]], tmp_path, simulate=toy_simulate,
                       chunk_size=3, progress=False)
    assert report.evaluated == 10 and report.errors == 2
    data = load_dataset(tmp_path, include_errors=True)
    errors = data.filter(pl.col("error").is_not_null())
    assert set(errors["scenario_id"]) == {scenario_id(bad), scenario_id(garbage)}
    assert "max_lora_rank" in errors.filter(pl.col("scenario_id") == scenario_id(bad))["error"][0]
    assert errors["total_throughput"].null_count() == 2
    assert load_dataset(tmp_path).height == 8  # default view: good rows only


def test_dask_local_cluster_matches_serial(tmp_path, scenarios):
    subset = scenarios[:9]
    run_sweep(subset, tmp_path / "serial", simulate=toy_simulate, chunk_size=4, progress=False)
    report = run_sweep(subset, tmp_path / "dask", simulate=toy_simulate, engine="dask", n_workers=1,
                       chunk_size=4, batch_size=2, progress=False)
    assert report.evaluated == len(subset)
    serial = _stable(load_dataset(tmp_path / "serial", include_errors=True))
    dask = _stable(load_dataset(tmp_path / "dask", include_errors=True))
    assert serial.equals(dask)


def test_bad_engine_is_named(tmp_path):
    with pytest.raises(ValueError, match="dataset.engine.*'spark'"):
        run_sweep([], tmp_path, simulate=toy_simulate, engine="spark")


def test_real_twin_rows_are_identical_on_dask_and_serial(tmp_path):
    from pathlib import Path

    from adaptwin.calibration.costs import load_calibration

    calibration = load_calibration(Path(__file__).parent / "fixtures" / "calibration_llama_example.json")
    config = SamplerConfig("llama-3.1-8b-instruct", duration_s=30, served_range=(8, 24))
    subset = sample_scenarios(config, 4, seed=11, calibration=calibration)
    run_sweep(subset, tmp_path / "serial", calibration=calibration, progress=False)
    run_sweep(subset, tmp_path / "dask", calibration=calibration, engine="dask", n_workers=2, batch_size=1,
              progress=False)
    serial = _stable(load_dataset(tmp_path / "serial", include_errors=True))
    assert serial["error"].null_count() == 4 and (serial["arrived_requests"] > 0).all()
    assert serial.equals(_stable(load_dataset(tmp_path / "dask", include_errors=True)))


def test_rows_of_an_earlier_design_are_kept_but_not_loaded(tmp_path, scenarios):
    run_sweep(scenarios[:6], tmp_path, simulate=toy_simulate, progress=False)
    run_sweep(scenarios[3:9], tmp_path, simulate=toy_simulate, progress=False)  # knobs changed: new design
    assert len(done_ids(tmp_path)) == 9
    assert sorted(load_dataset(tmp_path)["scenario_id"]) == sorted(scenario_id(s) for s in scenarios[3:9])
    assert load_dataset(tmp_path, design_only=False).height == 9


def test_sweep_runs_on_an_existing_scheduler(tmp_path, scenarios):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        report = run_sweep(scenarios[:5], tmp_path, simulate=toy_simulate, engine="dask",
                           scheduler_address=cluster.scheduler_address, progress=False)
    assert report.evaluated == 5 and load_dataset(tmp_path).height == 5


def test_a_twin_without_the_optional_outputs_and_chunks_cached_before_them_still_load(tmp_path, scenarios):
    """`OPTIONAL_OUTPUTS` (the tokens that arrived) are null where a twin leaves them out, and a chunk written
    before such a column existed concatenates with newer ones instead of failing the whole dataset."""
    run_sweep(scenarios[:10], tmp_path, simulate=toy_simulate, chunk_size=5, progress=False)
    first = chunk_files(tmp_path)[0]
    pl.read_parquet(first).drop("offered_throughput").write_parquet(first)  # an older chunk's schema
    data = load_dataset(tmp_path)
    assert data.height == 10 and data["offered_throughput"].null_count() == 10
    assert data["total_throughput"].null_count() == 0
