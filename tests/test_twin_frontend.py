"""The API server's /metrics renders (`adaptwin.twin.frontend`): vLLM 0.8.5 keeps one ``lora_requests_info``
series per adapter combination it has logged, the harness polls /metrics every 2 s, and a render holds the
API server, so a request that meets one waits for its end. Hand-checked pieces, invariants of the twin with
and without renders, and the premise read in the corpus."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_calibration import measurements
from twin_helpers import fixture_calibration, scenario

from adaptwin.calibration import inputs
from adaptwin.calibration.fit import SCRAPE_PER_ENTRY_S, SCRAPE_PER_SERIES_S, fit_model, load_tables
from adaptwin.io import dumps_json
from adaptwin.twin import frontend, simulate
from adaptwin.twin.api import prepare
from adaptwin.twin.arrivals import make_workload
from adaptwin.twin.engine import run_engine
from adaptwin.twin.metrics import step_durations
from adaptwin.twin.scenario import ScenarioError, parse_scenario

RENDER = {"base_s": 0.01, "per_series_s": 2e-4, "per_entry_s": 2e-5}  # large, so short tests see renders


def with_renders(data: dict) -> None:
    data["frontend"] = {"form": "metrics_scrape", "params": dict(RENDER)}


def test_step_bounds_chain_the_engine_steps(tmp_path):
    _, cal = fixture_calibration(tmp_path)
    sc, cal = prepare(scenario(served=12, duration=120.0), cal)
    run = run_engine(sc, cal, make_workload(sc))
    rec = run.recorder
    start, end = frontend.step_bounds(np.asarray(rec.seg_t0), np.asarray(rec.seg_k), np.asarray(rec.seg_d0),
                                      np.asarray(rec.seg_beta))
    durations = step_durations(np.asarray(rec.seg_start), np.asarray(rec.seg_k), np.asarray(rec.seg_d0),
                               np.asarray(rec.seg_beta))
    assert len(start) == run.steps > 100
    np.testing.assert_allclose(end - start, durations, rtol=1e-9, atol=1e-12)
    assert np.all(end[:-1] <= start[1:] + 1e-9)  # steps follow each other (idle gaps in between)
    assert end[-1] <= sc.duration_s


def test_label_series_counts_each_new_adapter_combination_once():
    """Steps [i, i+1): adapter 0 joins, 1 joins, 1 leaves, 1 joins again while a request of adapter 2
    arrives, then nothing changes. New labels: {0}, {0,1}, then (waiting {2}, running {0,1}); {0} and
    {0,1} come back but are old series."""
    start, end = np.arange(5.0), np.arange(1.0, 6.0)
    toggle_step, toggle_code = np.array([0, 1, 2, 3]), np.array([0, 1, ~1, 1])
    times, entries = frontend.label_series(start, end, toggle_step, toggle_code, np.array([3.5]),
                                           np.array([2]), served=3)
    assert times.tolist() == [1.0, 2.0, 4.0]
    assert entries.tolist() == [1, 2, 3]


def test_an_arrival_between_steps_is_never_a_waiting_label():
    """A request that arrives while the engine idles is scheduled in the next step: no waiting label."""
    start, end = np.array([0.0, 5.0]), np.array([1.0, 6.0])
    times, _ = frontend.label_series(start, end, np.array([0]), np.array([0]), np.array([3.0]), np.array([1]), 2)
    assert times.tolist() == [1.0]


def test_scrape_blocks_follow_the_poller():
    cost = frontend.ScrapeCost(base_s=0.01, per_series_s=0.1, per_entry_s=0.01)
    starts, ends = frontend.scrape_blocks(np.array([3.0]), np.array([5]), 10.0, 2.0, cost)
    np.testing.assert_allclose(starts, [2.0, 4.01, 6.17, 8.33])
    np.testing.assert_allclose(ends - starts, [0.01, 0.16, 0.16, 0.16])


def test_client_ttft_waits_for_a_render_on_either_side():
    starts, ends = np.array([2.0]), np.array([2.5])
    arrival, first = np.array([2.1, 1.0, 3.0, 1.9]), np.array([2.2, 2.3, 3.1, 2.0])
    # held at the door (2.1 -> 2.5, first token 0.1 s later); first token made during the render; untouched;
    # first token exactly at the render's start
    np.testing.assert_allclose(frontend.client_ttft(arrival, first, starts, ends), [0.5, 1.5, 0.1, 0.6])
    assert np.array_equal(frontend.client_ttft(arrival, first, np.zeros(0), np.zeros(0)), first - arrival)


def test_renders_change_only_the_client_ttft(tmp_path):
    _, cal = fixture_calibration(tmp_path, with_renders)
    sc = scenario(max_loras=8, served=48, rates=(0.2, 0.1, 0.05), duration=600.0)
    polled = simulate(sc, cal, zero_wall_time=True)
    quiet = simulate({**sc, "client": {"metrics_poll_s": None}}, cal, zero_wall_time=True)
    for key in ("total_throughput", "finished_requests", "itl_mean_ms", "itl_p99_ms", "starved", "steps"):
        assert polled[key] == quiet[key], key
    assert quiet["metrics_render_s"] == 0.0 < polled["metrics_render_s"]
    for key in ("ttft_mean_ms", "ttft_median_ms", "ttft_p99_ms"):
        assert polled[key] >= quiet[key], key
    assert polled["ttft_mean_ms"] > quiet["ttft_mean_ms"]
    assert dumps_json(polled) == dumps_json(simulate(sc, cal, zero_wall_time=True))  # deterministic


def test_renders_grow_with_the_adapter_combinations(tmp_path):
    """The same total load over more adapters: more distinct batches, longer renders, longer TTFT tail."""
    _, cal = fixture_calibration(tmp_path, with_renders)
    few = simulate(scenario(max_loras=6, served=6, rates=(0.8, 0.4, 0.2), duration=600.0), cal)
    many = simulate(scenario(max_loras=48, served=48, rates=(0.1, 0.05, 0.025), duration=600.0), cal)
    assert many["metrics_render_s"] > 2 * few["metrics_render_s"]
    assert many["ttft_p99_ms"] > few["ttft_p99_ms"]


def test_a_calibration_without_the_block_keeps_the_twin(tmp_path):
    """Calibrations written before the ``frontend`` block: the poller changes nothing."""
    _, cal = fixture_calibration(tmp_path)
    sc = scenario(served=24, duration=300.0)
    assert dumps_json(simulate(sc, cal, zero_wall_time=True)) == dumps_json(
        simulate({**sc, "client": {"metrics_poll_s": None}}, cal, zero_wall_time=True))


@pytest.mark.parametrize("value", [0, -2.0, "2s", True])
def test_a_bad_poll_interval_is_named(value):
    with pytest.raises(ScenarioError, match="client.metrics_poll_s"):
        parse_scenario({**scenario(), "client": {"metrics_poll_s": value}}, check_model=False)


def test_the_render_base_comes_from_base_model_profiling_polls():
    tables = load_tables(measurements())
    points = inputs.scrape_points(tables, "llama-3.1-8b-instruct")
    assert points["run_id"].str.contains("/predictor_default_latency/").all()
    block = fit_model(tables, "llama-3.1-8b-instruct", scrape=(SCRAPE_PER_SERIES_S, SCRAPE_PER_ENTRY_S))["frontend"]
    params = block.block["params"]
    assert 0.005 < params["base_s"] < 0.015  # the corpus: 5.1's polls answer in ~8.6 ms
    assert (params["per_series_s"], params["per_entry_s"]) == (SCRAPE_PER_SERIES_S, SCRAPE_PER_ENTRY_S)
    assert "frontend" not in fit_model(tables, "llama-3.1-8b-instruct")  # off unless the costs are given


def test_corpus_polls_slow_down_over_the_hour_only_with_lora_labels():
    """The premise, read in the corpus: in 5.6 runs serving >= 128 adapters the poll time in the last ten
    minutes is many times that of the first ten; in the base-model profiling runs (5.1) it is not."""
    tables = load_tables(measurements())
    polls = (tables.timeseries.sort("run_id", "sample")
             .with_columns((pl.col("t_s").diff().over("run_id") - inputs.POLL_SLEEP_S).alias("scrape_s"))
             .filter(pl.col("in_window").fill_null(False)))
    lora = tables.runs.filter((pl.col("family") == "real_results") & (pl.col("served_adapters") >= 128)
                              & pl.col("ttft_mean_ms").is_not_null())["run_id"]
    by_run = (polls.filter(pl.col("run_id").is_in(lora.to_list()))
              .group_by("run_id").agg(pl.col("scrape_s").filter(pl.col("t_s") < 600).median().alias("first"),
                                      pl.col("scrape_s").filter(pl.col("t_s") > 3000).median().alias("last")))
    assert by_run.height >= 50
    assert (by_run["last"] / by_run["first"]).median() > 5
    base = inputs.scrape_points(tables, "llama-3.1-8b-instruct")
    early = base.filter(pl.col("t_s") < 20)["scrape_s"].median()
    late = base.filter(pl.col("t_s") > 40)["scrape_s"].median()
    assert late < 1.5 * early
