"""The placement stage end to end on a tiny grid: workloads, every method, twin verification, the single-GPU
experiment, the metrics file and the figures; plus the workload generators."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from test_placement_fakes import BASE_CAPACITY, fake_evaluator, fake_workload

from adaptwin.paths import resolve
from adaptwin.placement import experiments, verify, workloads
from adaptwin.placement.api import METHODS, Context, place
from adaptwin.placement.core import PlacementError

SHARED = resolve("../shared")
needs_traces = pytest.mark.skipif(not (SHARED / "traces").exists(), reason="shared traces not mounted")


@needs_traces
def test_azure_workload_gives_every_adapter_a_request_and_is_deterministic():
    spec = workloads.WorkloadSpec(kind="azure", adapters=300, multiplier=1, requests_per_adapter=5)
    a, b = workloads.generate(spec, SHARED), workloads.generate(spec, SHARED)
    assert a.equals(b) and a.height == 300 and a["adapter_id"].n_unique() == 300
    assert (a["rate"] >= 1 / spec.window_s - 1e-9).all()
    per_window = workloads.trace_window(SHARED, "conv", spec.window_s)
    k = int(np.ceil(300 * 5 / per_window))
    assert a["rate"].sum() * spec.window_s == pytest.approx(k * per_window, rel=1e-3)
    x10 = workloads.generate(workloads.WorkloadSpec(kind="azure", adapters=300, multiplier=10,
                                                    requests_per_adapter=5), SHARED)
    assert x10["rate"].sum() == pytest.approx(10 * a["rate"].sum(), rel=1e-3)
    top = np.sort(a["rate"].to_numpy())[::-1]
    assert top[0] > 5 * np.median(top)  # skewed popularity


@pytest.mark.parametrize("kind", ["poisson", "uniform", "powerlaw"])
def test_synthetic_workloads_follow_their_rank_mix_and_mean(kind):
    spec = workloads.WorkloadSpec(kind=kind, adapters=2000, rank_mix="8-16-32", mean_rate=0.05, multiplier=2)
    frame = workloads.generate(spec)
    assert set(frame["rank"].unique().to_list()) == {8, 16, 32}
    assert frame["rate"].mean() == pytest.approx(0.1, rel=0.15)
    assert (frame["rate"] > 0).all()


def test_grid_expansion_and_bad_specs():
    specs = workloads.expand_grid({"kinds": ["azure", "uniform"], "adapters": [50, 100], "rank_mixes": ["8-16"],
                                   "multipliers": [1, 10], "seed": 3})
    assert len(specs) == 8 and len({s.name for s in specs}) == 8 and all(s.seed == 3 for s in specs)
    with pytest.raises(PlacementError, match="unknown key"):
        workloads.spec_from_dict({"kind": "uniform", "adapters": 5, "colour": "red"})
    with pytest.raises(PlacementError, match="rank_mix"):
        workloads.generate(workloads.WorkloadSpec(kind="uniform", adapters=5, rank_mix="8-64"))


def test_verification_resimulates_every_gpu_with_the_twin():
    from test_placement_fakes import FIXTURE

    from adaptwin.calibration.costs import load_calibration

    ctx = Context("llama-3.1-8b-instruct", fake_evaluator(), BASE_CAPACITY, "fake", "test")
    workload = fake_workload(40, mean_rate=0.2, ranks=(8, 16))
    placements = [place(workload, ctx, m) for m in ("greedy", "round-robin")]
    per_gpu = verify.verify(placements, load_calibration(FIXTURE), duration_s=60, workers=2,
                            labels=[{"workload": "w"}] * 2)
    assert per_gpu.height == sum(p.num_gpus for p in placements)
    assert set(verify.RESULT_KEYS) <= set(per_gpu.columns)
    again = verify.verify(placements, load_calibration(FIXTURE), duration_s=60, workers=1,
                          labels=[{"workload": "w"}] * 2)
    assert per_gpu.drop("wall_time_s", strict=False).equals(again.drop("wall_time_s", strict=False))
    summary = verify.summarize(per_gpu)
    assert summary["gpus"].to_list() == [p.num_gpus for p in placements]
    assert (summary["total_throughput"] <= summary["ideal_throughput"] + 1e-6).all()


@needs_traces
def test_stage_writes_outputs_metrics_and_figures(tmp_path):
    from test_placement_fakes import FIXTURE

    from adaptwin.calibration.costs import load_calibration
    from adaptwin.figures import placement as figs

    ctx = Context("llama-3.1-8b-instruct", fake_evaluator(), BASE_CAPACITY, "fake", "test")
    cfg = experiments.StageConfig(
        model="llama-3.1-8b-instruct", methods=METHODS, verify_duration_s=30, verify_workers=2,
        grid={"kinds": ["azure"], "adapters": [24], "rank_mixes": ["8-16"], "multipliers": [1, 10],
              "requests_per_adapter": 40},
        single_gpu_adapters=[8, 24], repair_duration_s=300)
    metrics = tmp_path / "metrics" / "placement.json"
    tables = experiments.run_stage(cfg, ctx, load_calibration(FIXTURE), SHARED, tmp_path / "placement", metrics)
    doc = json.loads(metrics.read_text())
    for key in ("proposed_never_more_gpus", "proposed_starved_gpus", "proposed_memory_errors",
                "proposed_mean_ratio_to_lower_bound", "workloads", "placement_time_s", "gpus_per_method"):
        assert key in doc
    assert len(doc["workloads"]) == 2 and set(doc["placement_time_s"]) == set(METHODS)
    summary = pl.read_parquet(tmp_path / "placement" / "summary.parquet")
    assert summary.height == 2 * len(METHODS) and summary["starved_gpus"].null_count() == 0
    repaired = summary.filter(pl.col("method").is_in(experiments.REPAIRED))
    assert (repaired["repair_time_s"] > 0).all()  # the proposed methods went through the twin repair
    assert (summary.filter(~pl.col("method").is_in(experiments.REPAIRED))["repair_time_s"] == 0).all()
    assert "proposed_repaired_gpus" in doc and set(doc["repair_time_s"]) == set(METHODS)
    name = summary["workload"][0]
    assert (tmp_path / "placement" / name / "greedy" / "placement.json").exists()
    assert (tmp_path / "placement" / "workloads" / f"{name}.csv").exists()
    one = tables["single_gpu"]
    assert set(one["method"].unique().to_list()) == {"greedy", "loraserve", "dlora", "ffd", "round-robin"}
    figures = tmp_path / "figures"
    written = [
        *figs.single_gpu(one, figures), *figs.gpus_and_itl(tables["summary"], figures),
        *figs.latency_variant(tables["summary"], figures), *figs.placement_times(tables["times"], figures),
    ]
    assert all(p.exists() and p.stat().st_size > 0 for p in written) and len(written) == 8


def test_lower_bound_uses_the_best_starvation_free_gpu_of_the_dataset(tmp_path):
    from adaptwin.io import write_parquet
    from adaptwin.placement import bounds

    write_parquet(tmp_path / "ds" / "chunk-000000.parquet", pl.DataFrame({
        "scenario_id": ["a", "b", "c", "d"], "error": [None, None, None, None],
        "total_throughput": [9000.0, 5000.0, 4000.0, 7000.0],
        "starved": [True, False, False, False], "memory_error": [False, False, False, True]},
        schema_overrides={"error": pl.String}))
    best, source = bounds.best_gpu_throughput("m", None, tmp_path / "ds")
    assert best == 5000.0 and "starvation-free" in source
    assert bounds.lower_bound_gpus(total_rate=24.0, tokens_per_req=400.0, best_throughput=best) == 2
    assert bounds.lower_bound_gpus(total_rate=0.0, tokens_per_req=400.0, best_throughput=best) == 1
