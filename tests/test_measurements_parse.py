"""Unit tests of the text parsers and time-series repairs on small hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from adaptwin.measurements import families, parse, schema, series


@pytest.mark.parametrize(
    ("name", "server", "bench", "run"),
    [
        ("_128_16_", ("128", "16"), (), None),
        ("_400__1_200", ("400",), ("1", "200"), None),
        ("_1_16__run_3", ("1", "16"), (), 3),
        ("_128_16__0.05_460", ("128", "16"), ("0.05", "460"), None),
        ("_", (), (), None),
        ("_250_300_8__1_100_64", ("250", "300", "8"), ("1", "100", "64"), None),
    ],
)
def test_folder_names(name, server, bench, run):
    assert families.parse_folder_name(name) == families.FolderName(server, bench, run)


@pytest.mark.parametrize("name", ["abc", "_12_x_", "_12"])
def test_folder_names_that_do_not_parse(name):
    with pytest.raises(ValueError, match=name):
        families.parse_folder_name(name)


def test_locate():
    loc = families.locate("benchmarks/lora/definitive_results/motivation_figure/without_slots/llama-2-7b/"
                          "varying_output_length/_384_16__0.05_460")
    assert (loc.family.name, loc.model, loc.subfamily) == ("motivation_without_slots", "llama-2-7b",
                                                           "varying_output_length")
    assert loc.family.layout(loc.subfamily).bench == ("request_rate_by_lora", "output_len")
    assert families.locate("somewhere/else/_1_") is None


SUMMARY = """Traffic request rate: inf
============ Serving Benchmark Result ============
Successful requests:                     4096
Benchmark duration (s):                  57.26
Total input tokens:                      20480
Total generated tokens:                  819200
Request throughput (req/s):              71.54
Input token throughput (tok/s):          357.68
Output token throughput (tok/s):         14307.07
---------------Time to First Token----------------
Mean TTFT (ms):                          26412.45
Median TTFT (ms):                        28262.89
P99 TTFT (ms):                           1234567890.12
-----Time per Output Token (excl. 1st token)------
Mean TPOT (ms):                          24.38
Median TPOT (ms):                        24.41
P99 TPOT (ms):                           26.21
---------------Inter-token Latency----------------
Mean ITL (ms):                           24.38
Median ITL (ms):                         24.07
P99 ITL (ms):                            33.85
==================================================
"""


def test_summary_block():
    s = parse.parse_summary(SUMMARY)
    assert s["successful_requests"] == 4096 and isinstance(s["successful_requests"], int)
    assert s["ttft_p99_ms"] == 1234567890.12  # value fills the column
    assert len(s) == 16


def test_truncated_summary_block_is_no_summary():
    assert parse.parse_summary(SUMMARY.rsplit("=" * 50, 1)[0]) is None
    assert parse.parse_summary("Server started\n") is None


def test_namespace_and_server_args():
    ns = parse.parse_namespace(
        "Namespace(request_rate=inf, adapter_rates=[0.1, 0.05], seed=0, x=None, ok=True, "
        "server_args='--port=1 --model=\"/a/b/llama-2-7b\" --enable-lora "
        "--dummy-lora-modules=\"/m/lora/x_dummy_rank_8/ /m/lora/x_dummy_rank_16/\" --max-loras=32 "
        "--max-cpu-loras=128 --max-lora-rank=16 --max-num-seqs=\"2048\"')")
    assert math.isinf(ns["request_rate"]) and ns["adapter_rates"] == [0.1, 0.05] and ns["ok"] is True
    sa = parse.parse_server_args(ns["server_args"])
    assert (sa.model, sa.max_loras, sa.max_cpu_loras, sa.max_lora_rank, sa.max_num_seqs) == (
        "llama-2-7b", 32, 128, 16, 2048)
    assert sa.dummy_lora_modules == ["x_dummy_rank_8", "x_dummy_rank_16"]
    assert [parse.adapter_rank(m) for m in sa.dummy_lora_modules] == [8, 16]
    named = parse.parse_server_args("--lora-modules sql-lora=/p/yard1_sql-lora-test_dummy_rank_32/ --max-loras=1")
    assert named.lora_modules == ["yard1_sql-lora-test_dummy_rank_32"] and named.max_loras == 1


def test_namespace_rejects_code():
    with pytest.raises(ValueError, match="evil"):
        parse.parse_namespace("Namespace(evil=__import__('os'))")


def test_failure_priority_and_spurious_warning():
    memory = {"log_1.err": "CANCELLED AT 2025 DUE TO TIME LIMIT", "server_err.log": "x\ntorch.OutOfMemoryError: CUDA out of memory.\n"}
    status, reason = parse.classify_failure(memory)
    assert status == "memory_error" and "server_err.log" in reason and "CUDA out of memory" in reason
    assert parse.classify_failure({"log_1.err": "UserWarning: All requests failed."})[0] == "no_summary"
    assert parse.classify_failure({"log_1.err": "*** JOB 1 ON n CANCELLED AT 2025-05-16T15:24:31 ***"})[0] == "cancelled"
    assert parse.classify_failure({"server_err.log": "[Errno 98] ... address already in use"})[0] == "crash"


def test_server_out():
    text = ("INFO vLLM API server version 0.1.dev6216+g1125ba0\n"
            "INFO args: Namespace(max_loras=128, max_lora_rank=16, max_cpu_loras=None, gpu_memory_utilization=0.9, "
            "enable_lora=True, lora_modules=None, dummy_lora_modules=None, max_num_seqs=2048)\n"
            "INFO Model loading took 26.7527 GiB and 22.299637 seconds\n"
            "INFO GPU KV cache size: 212,032 tokens\n"
            "INFO Total loads from disk: 1. Total loading time from disk: 0.05 seconds.\n"
            "INFO Total loads from memory: 1. Total loading time from memory: 8.4e-03 seconds.\n")
    so = parse.parse_server_out(text)
    assert (so.kv_tokens, so.model_memory_gib, so.model_loading_s) == (212032, 26.7527, 22.299637)
    assert so.args["max_loras"] == 128 and so.args["max_cpu_loras"] is None and so.args["enable_lora"] is True
    assert so.loads == [("disk", 1, 0.05), ("memory", 1, 0.0084)]


def test_overflow_and_truncation(tmp_path):
    np.save(tmp_path / "time.npy", np.arange(6, dtype=float))
    np.save(tmp_path / "num_running.npy", np.array([0, 1, 2, 0, 1], dtype=float))
    np.save(tmp_path / "processed_tokens_prompt.npy", np.array([0, 5, 999996, 0, 0, 0], dtype=float))
    data, problems = series.load_series(tmp_path)
    assert problems == [] and set(data.flags) == {"length_mismatch", "counter_overflow"}
    assert len(data.time) == 5
    prompt = data.values["prompt_tokens_total"]
    assert prompt[0] == 0 and np.isnan(prompt[3:]).all()  # leading 0 is real, later 0s are overflow
    assert data.values["num_running"][3] == 0  # gauges are never nulled


def test_estimate_window():
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    running = np.array([0, 3, 4, 2, 0, 0], dtype=float)
    assert series.estimate_window(t, running, np.zeros(6), 2.0) == (1.5, 3.5)
    assert series.estimate_window(t, np.zeros(6), np.zeros(6), 2.0) is None


def test_conform_rejects_undocumented_columns():
    with pytest.raises(ValueError, match="surprise"):
        schema.conform("lora_load_times", pl.DataFrame({"surprise": [1]}))
    frame = schema.conform("lora_load_times", pl.DataFrame({"adapter_rank": [8]}))
    assert frame.columns == [c.name for c in schema.LORA_LOAD_TIMES] and frame["load"].null_count() == 1
    assert schema.describe().height == sum(len(c) for c in schema.TABLES.values())
