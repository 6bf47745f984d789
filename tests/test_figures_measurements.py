"""Figures 1 and 4-7 (adaptwin.figures.measurements) on a real mini-corpus.

The fixture mirrors ~35 run folders of ../shared/vllm-measurements (files symlinked, nothing copied into the
repo) plus the scheduler and load-time CSVs, runs the real ingest on them and reads the tables back. Expected
values are typed in from the raw log summaries and the data card, not taken from the code under test.
"""

from __future__ import annotations

import os
import warnings

import polars as pl
import pytest
from corpus_paths import DEF, SOURCE

from adaptwin.figures import measurements as figs
from adaptwin.measurements import families, ingest, read_table

WO = DEF + "motivation_figure/without_slots/llama-2-7b/"
WS = DEF + "motivation_figure/with_slots/llama-2-7b/"
MEM = DEF + "performance_analysis/memory_overhead/"
COMP = DEF + "performance_analysis/compute_overhead/llama-2-7b/mean_dataset/"
LAT = DEF + "performance_analysis/loading_overhead/latency/llama-2-7b/"

RUNS = [
    WO + "initial_point/_64_16__0.05", WO + "initial_point/_192_16__0.05", WO + "initial_point/_448_16__0.05",
    WO + "varying_adapter_size/_64_8__0.05", WO + "varying_arrival_rate/_64_16__0.2",
    WS + "loaded_adapters_rate_0.0125/_12_128_16_", WS + "loaded_adapters_rate_0.0125/_12_320_16_",
    WS + "loaded_adapters_rate_0.0125/_12_256_16_", WS + "loaded_adapters_rate_0.025/_48_128_16_",
    WS + "loaded_adapters_without_offloading_rate_0.0125/_128_16_",
    WS + "loaded_adapters_without_offloading_rate_0.0125/_448_16_",
    MEM + "llama-2-7b/mean_dataset/_", MEM + "llama-2-7b/mean_dataset/_128_8_",
    MEM + "llama-2-7b/mean_dataset/_832_8_", MEM + "llama-2-7b/mean_dataset/_848_8_",
    MEM + "llama-2-7b/p25_dataset/_128_8_",
    MEM + "llama-2-13b/mean_dataset/_128_8_", MEM + "llama-2-13b/mean_dataset/_352_8_",
    MEM + "llama-2-13b/mean_dataset/_368_8_",
    COMP + "_100_32__0", COMP + "_100_32__1", COMP + "_100_32__8",
    *[LAT + f"mean_dataset/_1_8__run_{i}" for i in range(5)],
    *[LAT + f"p25_dataset/_1_16__run_{i}" for i in range(5)],
]
FILES = [*families.SCHEDULER_CSVS.values(), families.LORA_LOAD_TIMES_CSV]


def _mirror(target, rel: str) -> None:
    """Recreate ``rel`` under ``target`` as real folders whose files are symlinks into the shared corpus."""
    src = SOURCE / rel
    paths = [p for p in src.iterdir() if p.is_file()] if src.is_dir() else [src]
    for path in paths:
        link = target / path.relative_to(SOURCE)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path, link)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    if not SOURCE.is_dir():
        pytest.skip(f"{SOURCE} not present")
    corpus = tmp_path_factory.mktemp("corpus")
    for rel in RUNS + FILES:
        _mirror(corpus, rel)
    out = tmp_path_factory.mktemp("measurements")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mini-corpus lacks the other families: ingest warns, by design
        ingest(corpus, out)
    return {name: read_table(out, name) for name in ("runs", "timeseries", "scheduler_overhead", "lora_load_times")}


def _tail(run_id: str) -> str:
    """``<subfamily folder>/<run folder>`` of a run id."""
    return "/".join(run_id.split("/")[-2:])


def _row(frame: pl.DataFrame, suffix: str, column: str = "run_id") -> dict:
    rows = frame.filter(pl.col(column).str.ends_with(suffix)).to_dicts()
    assert len(rows) == 1, (suffix, len(rows))
    return rows[0]


# ------------------------------------------------------------------------------------------------- Fig. 1
def test_starvation_follows_the_0_9_ideal_rule(tables):
    flagged = figs.classify_outcome(tables["runs"].filter(pl.col("family").str.starts_with("motivation")))
    # (run, throughput = input + output tok/s from the log summary, served x rate, expected outcome)
    cases = [
        ("initial_point/_64_16__0.05", 786.32 + 726.56, 64 * 0.05, "ok"),
        ("initial_point/_192_16__0.05", 1646.51 + 1521.37, 192 * 0.05, "starved"),
        ("loaded_adapters_rate_0.0125/_12_128_16_", 398.32 + 368.05, 128 * 0.0125, "ok"),
        ("loaded_adapters_rate_0.0125/_12_320_16_", 801.60 + 740.68, 320 * 0.0125, "starved"),
    ]
    for suffix, throughput, load, expected in cases:
        row = _row(flagged, suffix)
        ideal = load * (250 + 231)
        assert row["ideal_throughput"] == pytest.approx(ideal)
        assert row["total_throughput"] == pytest.approx(throughput, abs=1e-6)
        assert (throughput < 0.9 * ideal) == (expected == "starved")
        assert row["outcome"] == expected, suffix
    assert _row(flagged, "initial_point/_448_16__0.05")["outcome"] == "memory_error"
    assert _row(flagged, "without_offloading_rate_0.0125/_448_16_")["outcome"] == "memory_error"
    assert _row(flagged, "loaded_adapters_rate_0.0125/_12_256_16_")["outcome"] == "failed"  # ran out of prompts


def test_motivation_panels_pick_the_right_subfamilies(tables):
    points = figs.motivation_points(tables["runs"])
    by_panel = {p: {_tail(r) for r in points.filter(pl.col("panel") == p)["run_id"]} for p in ("rank", "rate", "a_max")}
    assert by_panel["rank"] == {"initial_point/_64_16__0.05", "initial_point/_192_16__0.05",
                                "initial_point/_448_16__0.05", "varying_adapter_size/_64_8__0.05"}
    assert by_panel["rate"] == {"initial_point/_64_16__0.05", "initial_point/_192_16__0.05",
                                "initial_point/_448_16__0.05", "varying_arrival_rate/_64_16__0.2"}
    assert "loaded_adapters_rate_0.025/_48_128_16_" not in by_panel["a_max"]  # other rate
    max_loras = points.filter(pl.col("panel") == "a_max")
    assert _row(max_loras, "offloading_rate_0.0125/_128_16_")["series"] == float("inf")  # A_max = served
    assert _row(max_loras, "rate_0.0125/_12_320_16_")["series"] == 12
    assert _row(points.filter(pl.col("panel") == "rank"), "_64_8__0.05")["series"] == 8
    assert _row(points.filter(pl.col("panel") == "rate"), "_64_16__0.2")["series"] == pytest.approx(0.2)


# ------------------------------------------------------------------------------------------------- Fig. 4
def test_memory_overhead_points_and_limits(tables):
    points = figs.memory_overhead_points(tables["runs"], "mean")
    assert points.height == 7  # the p25 run is not in the mean panel
    assert points.filter(pl.col("rank").is_null())["model"].to_list() == ["llama-2-7b"]  # no-LoRA baseline
    row = _row(points, "llama-2-7b/mean_dataset/_128_8_")  # data card worked example 4
    assert (row["a_max"], row["rank"], row["itl_ms"]) == (128, 8, pytest.approx(86.64))
    assert row["throughput"] > 2401.45  # output throughput alone is 2401.45 tok/s
    limits = {(r["model"], r["rank"]): (r["last_ok"], r["first_memory_error"])
              for r in figs.memory_limits(points).iter_rows(named=True)}
    assert limits == {("llama-2-7b", 8): (832, 848), ("llama-2-13b", 8): (352, 368)}


# ------------------------------------------------------------------------------------------------- Fig. 5
def test_compute_overhead_relative_to_base_model(tables):
    points = figs.compute_overhead_points(tables["runs"])
    assert points["adapters"].to_list() == [0, 1, 8]
    base = points.filter(pl.col("adapters") == 0).row(0, named=True)
    assert base["slowdown_pct"] == 0 and base["itl_overhead_pct"] == 0
    one = points.filter(pl.col("adapters") == 1).row(0, named=True)
    # log summaries: _100_32__0 in/out 2202.48 / 2035.09 tok/s, ITL 70.91 ms; _100_32__1 1926.70 / 1780.27, 79.91
    assert one["slowdown_pct"] == pytest.approx((1 - (1926.70 + 1780.27) / (2202.48 + 2035.09)) * 100, abs=1e-6)
    assert one["itl_overhead_pct"] == pytest.approx((79.91 / 70.91 - 1) * 100, abs=1e-6)


# ------------------------------------------------------------------------------------------------- Fig. 6
def test_loading_time_points_match_the_csv(tables):
    times = figs.loading_time_points(tables["lora_load_times"])
    first32 = times.filter(pl.col("adapter_rank") == 32, pl.col("load") == "first").row(0, named=True)
    assert first32["loading_ms"] == pytest.approx(509.965) and first32["activating_ms"] == pytest.approx(8.432)
    next32 = times.filter(pl.col("adapter_rank") == 32, pl.col("load") == "next").row(0, named=True)
    assert next32["n"] == 3 and next32["loading_ms"] == pytest.approx((102.383 + 107.473 + 51.136) / 3)


def test_loading_latency_keeps_clean_repetitions(tables):
    kept = figs.loading_latency_runs(tables["runs"], tables["timeseries"])
    names = {_tail(r["run_id"]): r for r in kept.iter_rows(named=True)}
    # mean/_1_8: only run_0 and run_4 have a server that finished 100 + 1 requests (data card section 6)
    # p25/_1_16: no clean repetition, so the fastest one (run_2, 1.55 s) stands in, flagged
    assert set(names) == {"mean_dataset/_1_8__run_0", "mean_dataset/_1_8__run_4", "p25_dataset/_1_16__run_2"}
    assert names["mean_dataset/_1_8__run_0"]["clean"] and not names["p25_dataset/_1_16__run_2"]["clean"]
    # log: mean TTFT 3809.90 ms, mean TPOT 26.65 ms, 23100 output tokens / 100 requests
    assert names["mean_dataset/_1_8__run_0"]["latency_ms"] == pytest.approx(3809.90 + 26.65 * (231 - 1))
    points = figs.loading_latency_points(tables["runs"], tables["timeseries"], tables["lora_load_times"])
    mean8 = points.filter(pl.col("size") == "mean", pl.col("rank") == 8).row(0, named=True)
    assert mean8["repetitions"] == 2
    assert mean8["from_disk_ms"] - mean8["from_cpu_ms"] == pytest.approx(103.859)  # first disk load, rank 8
    assert mean8["from_cpu_ms"] - mean8["latency_ms"] == pytest.approx(8.537)


# ------------------------------------------------------------------------------------------------- Fig. 7
def test_scheduler_time_per_step(tables):
    points = figs.scheduler_points(tables["scheduler_overhead"])
    assert points.height == 452 + 336
    first = points.filter(pl.col("source") == "aggregated_rate").row(0, named=True)  # data card cross-check
    assert (first["gpu_loras"], first["cpu_loras"], first["steps"]) == (8, 8, 23301)
    assert first["sched_ms_per_step"] == pytest.approx(0.9938552706735209 / 23301 * 1000)


# ------------------------------------------------------------------------------------------------ writing
def test_every_figure_writes_png_and_pdf(tables, tmp_path):
    runs, series, loads = tables["runs"], tables["timeseries"], tables["lora_load_times"]
    written = [
        *figs.fig1_motivation(runs, tmp_path),
        *figs.fig4_memory_overhead(runs, tmp_path),
        *figs.fig5_compute_overhead(runs, tmp_path),
        *figs.fig6_loading_overhead(runs, series, loads, tmp_path),
        *figs.fig7_scheduler_overhead(tables["scheduler_overhead"], tmp_path),
    ]
    assert sorted(p.suffix for p in written) == [".pdf"] * 5 + [".png"] * 5
    for path in written:
        head = path.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF"), path
        assert path.stat().st_size > 5000, path
