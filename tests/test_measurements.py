"""Full ingest of ../shared/vllm-measurements against the data card: inventory counts (section 2), worked
examples and cross-checks (section 7), data-quality counts (section 6) and schema conformance.

Status mapping used for the inventory table ("with result" / "memory failure" / "other failure"):
with result = ok + placeholder; memory failure = memory_error; other failure = crash + cancelled + no_summary.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from corpus_paths import DEF, DTD, SOURCE

from adaptwin.measurements import ingest, read_table, schema, series

EX1 = DTD + "predictor_default_latency/llama-3.1-8b-instruct/output/_400__1_200"
EX2 = DEF + "digital_twin_modelling/real_results/llama-3.1-8b-instruct/rank_16_rates_0.1_0.05_0.025/_32_128_16_"
EX3 = DTD + "find_available_gpu_memory_depending_on_loaded_adapters/"
EX4 = DEF + "performance_analysis/memory_overhead/llama-2-7b/mean_dataset/_128_8_"
EX59 = DEF + "ml_modelling/test_dataset/llama-3.1-8b-instruct/rate_0.4-0.05-0.0125_size_8-16-16/_128_128_16_"

# family: (runs, with result, memory failure, other failure) -- data card section 2
INVENTORY = {
    "default_latency": (57, 57, 0, 0),
    "lora_compute_overhead": (65, 64, 0, 1),
    "adapter_loading": (12, 12, 0, 0),
    "available_gpu_memory": (84, 65, 19, 0),
    "real_results": (163, 131, 30, 2),
    "heterogeneous_results": (495, 361, 114, 20),
    "motivation_with_slots": (171, 151, 8, 12),
    "motivation_without_slots": (132, 107, 18, 7),
    "memory_overhead": (243, 150, 87, 6),
    "compute_overhead": (92, 90, 0, 2),
    "loading_overhead": (45, 45, 0, 0),
}
# Finer status counts, from the failure breakdowns of data card sections 5.2-5.8.
STATUS_COUNTS = {
    "default_latency": {"ok": 57},
    "lora_compute_overhead": {"ok": 64, "crash": 1},  # illegal memory access
    "adapter_loading": {"ok": 12},
    "available_gpu_memory": {"ok": 63, "placeholder": 2, "memory_error": 19},
    "real_results": {"ok": 131, "memory_error": 30, "cancelled": 2},  # 2 manual cancels
    # 20 "with neither" (5.9): 9 servers that did not start on time, 5 Slurm time limits, 3 illegal memory
    # accesses, 3 port clashes (their log_*.err and server_err.log)
    "heterogeneous_results": {"ok": 361, "memory_error": 114, "no_summary": 9, "cancelled": 5, "crash": 6},
    "motivation_with_slots": {"ok": 151, "memory_error": 8, "no_summary": 9, "crash": 3},  # 9 Task..., 2 illegal, 1 port
    "motivation_without_slots": {"ok": 107, "memory_error": 18, "cancelled": 5, "crash": 2},  # 5 time limits
    "memory_overhead": {"ok": 150, "memory_error": 87, "crash": 6},  # 3 ECC, 2 port, 1 unknown
    "compute_overhead": {"ok": 90, "crash": 2},  # port clashes
    "loading_overhead": {"ok": 45},
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    out = tmp_path_factory.mktemp("measurements")
    report = ingest(SOURCE, out)
    frames = {name: read_table(out, name) for name in schema.TABLES}
    return report, frames


def run(frames, run_id: str) -> dict:
    rows = frames["runs"].filter(pl.col("run_id") == run_id)
    assert rows.height == 1, run_id
    return rows.row(0, named=True)


def samples(frames, run_id: str) -> pl.DataFrame:
    return frames["timeseries"].filter(pl.col("run_id") == run_id).sort("sample")


# --- inventory (section 2) -----------------------------------------------------------------------------------


def test_clean_corpus_gives_no_warnings(tables):
    report, _ = tables
    assert report.warnings == []


@pytest.mark.parametrize("family", sorted(INVENTORY))
def test_inventory_counts(tables, family):
    _, frames = tables
    runs = frames["runs"].filter(pl.col("family") == family)
    status = runs["status"].to_list()
    expected = INVENTORY[family]
    got = (
        len(status),
        sum(s in ("ok", "placeholder") for s in status),
        status.count("memory_error"),
        sum(s in ("crash", "cancelled", "no_summary") for s in status),
    )
    assert got == expected
    assert dict(runs.group_by("status").len().iter_rows()) == STATUS_COUNTS[family]


def test_report_counts_match_runs_table(tables):
    report, frames = tables
    assert report.counts == STATUS_COUNTS
    assert report.rows["runs"] == frames["runs"].height == 1559


def test_ok_runs_have_a_summary_and_failed_runs_a_reason(tables):
    _, frames = tables
    runs = frames["runs"]
    ok = runs.filter(pl.col("status") == "ok")
    assert ok["duration_s"].null_count() == 0 and ok["itl_mean_ms"].null_count() == 0
    failed = runs.filter(~pl.col("status").is_in(["ok"]))
    assert failed["reason"].null_count() == 0
    assert (runs["total_throughput"] - runs["input_throughput"] - runs["output_throughput"]).abs().max() < 1e-9


# --- worked examples (section 7) ----------------------------------------------------------------------------


def test_example_1_default_latency(tables):
    _, frames = tables
    r = run(frames, EX1)
    assert (r["family"], r["model"], r["vllm_version"]) == ("default_latency", "llama-3.1-8b-instruct", "0.8.5")
    assert (r["enable_lora"], r["max_num_seqs"], r["num_prompts"], r["input_len"], r["output_len"]) == (
        False, 400, 4096, 5, 200)
    assert r["output_throughput"] == 14307.066906433354
    assert r["itl_mean_ms"] == 24.381722145675592
    assert r["duration_s"] == 57.258416792028584
    assert (r["total_output_tokens"], r["total_input_tokens"]) == (819200, 20480)
    assert (r["json_start_time"], r["json_end_time"]) == (1038072.996895603, 1038130.255312395)
    ts = samples(frames, EX1)
    assert ts.height == 38 and ts["num_running"].mean() == 256.5263157894737 and ts["num_running"].max() == 400
    inside = ts.filter(pl.col("in_window"))
    assert inside.height == 28 and inside["num_running"].mean() == 348.10714285714283
    assert r["mean_running_in_window"] == 348.10714285714283 and r["n_samples_in_window"] == 28


def test_example_2_real_run_by_time(tables):
    _, frames = tables
    r = run(frames, EX2)
    assert (r["max_loras"], r["served_adapters"], r["logged_num_adapters"], r["max_lora_rank"]) == (32, 128, 128, 16)
    assert r["adapter_rates"] == [0.025, 0.05, 0.1] and r["adapter_rate_counts"] == [42, 43, 43]
    assert r["adapter_ranks"] == [8, 16] and r["rank_assignment"] == "cyclic"
    assert (r["benchmark"], r["total_time_s"], r["job_id"]) == ("by_time", 3600.0, 21074665)
    assert (r["successful_requests"], r["duration_s"], r["output_throughput"]) == (27024, 3600.06, 1457.71)
    assert (r["ttft_mean_ms"], r["itl_mean_ms"]) == (9354.02, 40.69)
    ts = samples(frames, EX2)
    assert ts.height == 1540 and ts["num_running"].mean() == 51.296103896103894 and ts["num_running"].max() == 75
    assert (ts["time_raw"][0], ts["time_raw"][-1]) == (1461058.630427876, 1464689.583086641)
    prompt = ts["prompt_tokens_total"]
    assert prompt[289] == 996038 and prompt[290:].null_count() == ts.height - 290  # overflow -> null
    assert "counter_overflow" in r["flags"] and r["window_source"] == "activity_end"
    # the estimated window spans the duration and ends inside the series
    assert math.isclose(r["window_end"] - r["window_start"], 3600.06)
    assert ts["time_raw"][0] < r["window_start"] < r["window_end"] < ts["time_raw"][-1]


def test_example_59_heterogeneous_run(tables):
    _, frames = tables
    r = run(frames, EX59)
    assert (r["family"], r["model"], r["vllm_version"]) == ("heterogeneous_results", "llama-3.1-8b-instruct", "0.8.5")
    assert (r["max_loras"], r["served_adapters"], r["logged_num_adapters"], r["max_lora_rank"]) == (128, 128, 128, 16)
    assert r["adapter_rates"] == [0.0125, 0.05, 0.4] and r["adapter_rate_counts"] == [42, 43, 43]
    assert r["adapter_ranks"] == [8, 16, 16] and r["rank_assignment"] == "cyclic"
    assert (r["benchmark"], r["total_time_s"], r["job_id"], r["max_num_seqs"]) == ("by_time", 3600.0, 21810398, 2048)
    assert (r["successful_requests"], r["duration_s"]) == (71372, 3600.13)
    assert (r["input_throughput"], r["output_throughput"]) == (4402.41, 3847.42)
    assert (r["ttft_mean_ms"], r["itl_mean_ms"]) == (557.17, 117.30)
    assert (r["pool_prompts"], r["pool_input_tokens"], r["pool_output_tokens"]) == (214650, 47812122, 42236124)
    assert samples(frames, EX59).height == r["n_samples"] > 0


def test_heterogeneous_grid_and_groups(tables):
    """5.9: nine rate/size groups of 55 runs, A_max and served over the ten grid values with served >= A_max,
    memory failures exactly where 5.6 has them (A_max >= 256 with S_max 16, >= 128 with S_max 32)."""
    _, frames = tables
    runs = frames["runs"].filter(pl.col("family") == "heterogeneous_results")
    grid = [16, 32, 64, 96, 128, 160, 192, 256, 320, 384]
    assert sorted(runs["max_loras"].unique()) == grid and sorted(runs["served_adapters"].unique()) == grid
    assert (runs["served_adapters"] >= runs["max_loras"]).all()
    assert sorted(runs.group_by("subfamily").len()["len"].unique()) == [55]
    memory = runs.filter(pl.col("status") == "memory_error")
    limit = pl.when(pl.col("max_lora_rank") == 16).then(256).otherwise(128)
    assert memory.height == 114 and (memory["max_loras"] >= memory.select(limit)[:, 0]).all()
    ok = runs.filter(pl.col("status") == "ok")
    assert (ok["max_loras"] < ok.select(limit)[:, 0]).all()
    groups = {"0.05-0.0125-0.003125": "8-8-16", "0.1-0.00625-0.003125": "16-16-16", "0.4-0.05-0.00625": "8-16-32",
              "0.4-0.05-0.0125": "8-16-16", "0.4-0.05-0.025": "8-8-32", "0.8-0.0125-0.003125": "8-16-16",
              "0.8-0.4-0.05": "8-8-32", "3.2-1.6-0.025": "16-16-16", "3.2-1.6-0.1": "8-8-32"}
    assert sorted(runs["subfamily"].unique()) == sorted(f"rate_{r}_size_{s}" for r, s in groups.items())
    for r in ok.iter_rows(named=True):  # the logged rates and the ranks cycled are the group's
        rates, sizes = r["subfamily"].removeprefix("rate_").split("_size_")
        assert sorted(r["adapter_rates"]) == sorted(float(x) for x in rates.split("-"))
        assert r["adapter_ranks"] == [int(x) for x in sizes.split("-")]
        assert r["max_lora_rank"] == max(r["adapter_ranks"])


def test_example_3_available_gpu_memory(tables):
    _, frames = tables
    kv = frames["kv_capacity"]

    def kv_row(model, folder):
        return kv.filter(pl.col("run_id") == f"{EX3}{model}/{folder}").row(0, named=True)

    ok = kv_row("llama-3.1-8b-instruct", "_128_16_")
    assert (ok["max_loras"], ok["max_lora_rank"], ok["kv_tokens"], ok["model_memory_gib"]) == (128, 16, 212032, 26.7527)
    r = run(frames, f"{EX3}llama-3.1-8b-instruct/_128_16_")
    assert (r["successful_requests"], r["output_throughput"]) == (1, 63.1576089980496)
    failed = kv_row("llama-3.1-8b-instruct", "_128_32_")
    assert failed["status"] == "memory_error" and failed["kv_tokens"] is None
    assert "131072" in failed["reason"] and failed["kv_available_gib"] < failed["kv_needed_gib"]
    assert "no_namespace" in run(frames, f"{EX3}llama-3.1-8b-instruct/_128_32_")["flags"]
    qwen = kv_row("qwen-2.5-7b-instruct", "_128_16_")
    assert (qwen["kv_tokens"], qwen["model_memory_gib"]) == (526992, 23.8739)
    placeholders = kv.filter(pl.col("status") == "placeholder")["run_id"].to_list()
    assert sorted(placeholders) == [f"{EX3}llama-3.1-8b-instruct/_384_8_", f"{EX3}qwen-2.5-7b-instruct/_384_16_"]
    assert kv.filter(pl.col("status").is_in(["ok", "placeholder"]))["kv_tokens"].null_count() == 0


def test_example_4_llama2(tables):
    _, frames = tables
    r = run(frames, EX4)
    assert (r["model"], r["vllm_version"], r["max_loras"], r["max_lora_rank"]) == ("llama-2-7b", "0.5.0", 128, 8)
    assert (r["served_adapters"], r["num_prompts"], r["disable_loras_users"], r["job_id"]) == (0, 1500, True, 12825449)
    assert (r["successful_requests"], r["duration_s"], r["output_throughput"], r["itl_mean_ms"]) == (
        1500, 144.29, 2401.45, 86.64)
    ts = samples(frames, EX4)
    assert ts.height == 159 and ts["time_base"].unique().to_list() == ["poller_start"]
    metrics = [c for c in series.NPY_COLUMNS.values() if ts[c].null_count() < ts.height]
    assert len(metrics) + 1 == 9  # nine arrays including time.npy
    assert math.isclose(ts["time_raw"][0], 2.85e-06, rel_tol=1e-2) and round(ts["time_raw"][-1], 2) == 161.66
    assert ts["num_running"].mean() == 152.49056603773585 and ts["num_running"].max() == 253
    assert (ts["num_preempted"][-1], ts["finished"][-1]) == (734, 1501)


def test_cross_check_adapter_loading_reproduces_constants(tables):
    _, frames = tables
    loading = frames["adapter_loading"]
    one = loading.filter(pl.col("run_id") == DTD + "predictor_loading/llama-3.1-8b-instruct/adapter_rank_8/_16_")
    assert round(one["authors_mean_ms"][0], 6) == 7.772142
    assert one.filter(pl.col("source") == "memory").height == 100
    assert one.filter(pl.col("source") == "disk").height == 50
    per_run = loading.group_by("model", "max_lora_rank", "adapter_rank").agg(pl.col("authors_mean_ms").first())
    assert per_run.height == 12
    for model, s_max, rank, value in per_run.iter_rows():
        constants = json.loads((SOURCE / f"{DTD}predictor_loading/{model}_constants.json").read_text())
        assert value == pytest.approx(constants[str(s_max)][str(rank)], rel=1e-12)
    # request loads are exactly the differenced cumulative lines 51..100
    request = one.filter(pl.col("phase") == "request")
    assert request.height == 50 and request["load_time_ms"].mean() == pytest.approx(one["authors_mean_ms"][0])


def test_cross_check_scheduler_overhead(tables):
    _, frames = tables
    sched = frames["scheduler_overhead"]
    assert dict(sched.group_by("source").len().iter_rows()) == {"adapter_rates": 452, "aggregated_rate": 336}
    first = sched.filter(pl.col("source") == "aggregated_rate").row(0, named=True)
    assert (first["gpu_loras"], first["cpu_loras"], first["rate"]) == (8, 8, 1.0)
    assert (first["output_throughput"], first["completed_requests"], first["steps"]) == (226.37936468519388, 588, 23301)
    assert sched.null_count().sum_horizontal()[0] == 0
    assert frames["lora_load_times"].height == 12


def test_rerun_with_two_complete_runs_uses_the_later_job(tables):
    _, frames = tables
    r = run(frames, DEF + "performance_analysis/memory_overhead/llama-2-7b/p25_dataset/_32_32_")
    assert r["job_id"] == 12910860 and r["job_ids"] == [12848075, 12910860]
    assert r["duration_s"] == 42.07 and "two_complete_runs" in r["flags"]
    assert frames["runs"]["flags"].list.contains("two_complete_runs").sum() == 1


# --- data-quality counts (section 6) -------------------------------------------------------------------------


def flag_count(frames, flag: str) -> dict[str, int]:
    runs = frames["runs"].filter(pl.col("flags").list.contains(flag))
    return dict(runs.group_by("family").len().iter_rows())


def test_counter_overflow_counts(tables):
    _, frames = tables
    assert flag_count(frames, "counter_overflow") == {
        "real_results": 127, "motivation_without_slots": 75, "default_latency": 24, "memory_overhead": 21,
        "lora_compute_overhead": 15, "heterogeneous_results": 361}
    ts = frames["timeseries"]
    for column in series.COUNTERS:  # no 0 after a positive value is left in any counter
        bad = ts.select(
            ((pl.col(column) == 0) & (pl.col(column).cum_max().shift(1).over("run_id") > 0)).sum()
        ).item()
        assert bad == 0, column


def test_length_mismatch_and_shared_servers(tables):
    _, frames = tables
    # 13 in the data card's section 6, plus 3 cancelled 5.9 runs
    assert sum(flag_count(frames, "length_mismatch").values()) == 13 + 3
    assert flag_count(frames, "length_mismatch")["heterogeneous_results"] == 3
    assert flag_count(frames, "shared_server") == {"loading_overhead": 18, "heterogeneous_results": 2}
    r = run(frames, DEF + "digital_twin_modelling/real_results/llama-3.1-8b-instruct/rank_32_rates_0.1_0.05_0.025/_32_256_32_")
    assert r["status"] == "cancelled" and r["n_samples"] == 1501 and "length_mismatch" in r["flags"]


def test_time_bases(tables):
    _, frames = tables
    runs = frames["runs"].filter(pl.col("n_samples").is_not_null())
    bases = dict(runs.group_by("time_base").agg(pl.col("family").unique().sort()).iter_rows())
    assert bases["perf_counter"] == ["adapter_loading", "default_latency", "heterogeneous_results", "lora_compute_overhead",
                                     "motivation_with_slots", "real_results"]
    first = frames["timeseries"].filter(pl.col("sample") == 0).join(frames["runs"], on="run_id")
    assert first.filter(pl.col("time_base") == "poller_start")["time_raw"].max() < 1.0
    assert first.filter(pl.col("time_base") == "perf_counter")["time_raw"].min() > 1000.0


def test_estimated_window_agrees_with_json_runs(tables):
    """The activity-end estimate, applied to the runs that do have a JSON, lands within 1.1 s of end_time."""
    _, frames = tables
    runs = frames["runs"].filter((pl.col("window_source") == "json") & (pl.col("max_running") > 0))
    ts = frames["timeseries"]
    assert runs.height >= 120
    for r in runs.iter_rows(named=True):
        one = ts.filter(pl.col("run_id") == r["run_id"]).sort("sample")
        window = series.estimate_window(one["time_raw"].to_numpy(), one["num_running"].to_numpy().astype(float),
                                        one["num_waiting"].to_numpy().astype(float), r["duration_s"])
        assert abs(window[1] - r["json_end_time"]) < 1.1, r["run_id"]


def test_timeseries_window_columns(tables):
    _, frames = tables
    joined = frames["timeseries"].join(frames["runs"].select("run_id", "window_start", "window_end"), on="run_id")
    with_window = joined.filter(pl.col("window_start").is_not_null())
    assert (with_window["t_s"] - (with_window["time_raw"] - with_window["window_start"])).abs().max() == 0
    inside = (with_window["time_raw"] >= with_window["window_start"]) & (with_window["time_raw"] <= with_window["window_end"])
    assert (inside == with_window["in_window"]).all()
    assert joined.filter(pl.col("window_start").is_null())["in_window"].null_count() == joined.filter(
        pl.col("window_start").is_null()).height


# --- schema -------------------------------------------------------------------------------------------------


def test_tables_follow_the_schema(tables):
    _, frames = tables
    for name, frame in frames.items():
        assert frame.schema == pl.Schema(schema.polars_schema(name)), name
    for name, cols in schema.TABLES.items():
        assert all(c.meaning for c in cols), name
        assert len({c.name for c in cols}) == len(cols), name


def test_runs_parameters_are_consistent(tables):
    _, frames = tables
    runs = frames["runs"]
    assert runs.filter(pl.col("flags").list.contains("folder_name_mismatch")).height == 0
    served = runs.filter(pl.col("logged_num_adapters").is_not_null())
    differ = served.filter(pl.col("served_adapters") != pl.col("logged_num_adapters"))
    # two 5.9 jobs on one port measured each other's server (each logged the other's adapter count)
    group = DEF + "ml_modelling/test_dataset/llama-3.1-8b-instruct/rate_3.2-1.6-0.025_size_16-16-16/"
    assert sorted(differ["run_id"]) == [group + "_64_192_16_", group + "_64_256_16_"]
    assert differ["flags"].list.contains("shared_server").all() and sorted(differ["logged_num_adapters"]) == [192, 256]
    served = served.join(differ, on="run_id", how="anti")
    assert (served["served_adapters"] == served["logged_num_adapters"]).all()
    by_time = runs.filter((pl.col("benchmark") == "by_time") & pl.col("adapter_rate_counts").is_not_null())
    by_time = by_time.filter(~pl.col("flags").list.contains("shared_server"))
    assert (by_time["adapter_rate_counts"].list.sum() == by_time["served_adapters"]).all()
    lora = runs.filter(pl.col("served_adapters") > 0)
    assert (lora["served_adapters"] >= lora["max_loras"]).all()
    assert set(runs["model"].unique()) == {"llama-3.1-8b-instruct", "qwen-2.5-7b-instruct", "llama-2-7b", "llama-2-13b"}
    assert runs["model"].null_count() == 0 and runs["vllm_version"].null_count() == 0
    assert np.all(runs.filter(pl.col("model").str.starts_with("llama-2"))["vllm_version"].to_numpy() == "0.5.0")


def test_read_table_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="runs.parquet"):
        read_table(tmp_path, "runs")
    pl.DataFrame({"x": [1]}).write_parquet(tmp_path / "runs.parquet")
    with pytest.raises(ValueError, match="runs.parquet"):
        read_table(tmp_path, "runs")
    with pytest.raises(ValueError, match="nope"):
        read_table(tmp_path, "nope")
