"""Offline parts of the vLLM profiling harness: Prometheus parser, dummy adapters, config grid, the
``vllm serve`` command line, the environment check, the benchmark's summary statistics, and the
``kv_capacity`` row read from captured server logs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adaptwin.measurements import schema
from adaptwin.measurements.parse import classify_failure
from adaptwin.profiling import adapters, prometheus, server, writers
from adaptwin.profiling.client import RequestOutput, assign_rates, fixed_count_schedule, poisson_arrivals
from adaptwin.profiling.config import config_from_dict, expand, folder_name, load_config, model_key
from adaptwin.profiling.fake import go_float
from adaptwin.profiling.runner import summarize

# --- Prometheus text format ---------------------------------------------------------------------------------

SCRAPE = r"""# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.234567e+06
# a free comment
vllm:generation_tokens_total{model_name="m"} 2.5E7 1700000000000
vllm:num_requests_running{model_name="m"} 42.0
vllm:gpu_cache_usage_perc{model_name="m"} NaN
vllm:request_success_total{finished_reason="stop",model_name="m"} 3.0
vllm:request_success_total{finished_reason="length",model_name="m"} 1.0e+06
vllm:request_success_total{finished_reason="abort",model_name="m"} 2.0
weird{path="C:\\dir\"x\"",msg="a,b}=c\nd", empty=""} +Inf
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 7
neg -Inf
"""


def test_parser_reads_scientific_notation_labels_and_special_values():
    m = prometheus.parse(SCRAPE)
    assert m.first("vllm:prompt_tokens_total") == 1_234_567.0  # the corpus's poller stored 0 here
    assert m.first("vllm:generation_tokens_total") == 2.5e7
    assert m.series("vllm:generation_tokens_total")[0].timestamp_ms == 1_700_000_000_000
    assert m.first("vllm:num_requests_running") == 42.0
    assert math.isnan(m.first("vllm:gpu_cache_usage_perc"))
    assert m.first("weird") == math.inf and m.first("neg") == -math.inf
    weird = m.series("weird")[0].labels
    assert weird == {"path": 'C:\\dir"x"', "msg": "a,b}=c\nd", "empty": ""}
    assert m.first("vllm:time_to_first_token_seconds_bucket", le="+Inf") == 7
    assert m.types["vllm:prompt_tokens_total"] == "counter"
    assert m.first("absent") is None and m.total("absent") is None


def test_first_request_success_series_differs_from_the_sum():
    m = prometheus.parse(SCRAPE)
    # corpus semantics (data card 4.5): finished = the FIRST series (finished_reason="stop"), not a total
    assert prometheus.extract(m)["finished"] == 3.0
    assert m.total("vllm:request_success_total") == 1_000_005.0
    assert m.first("vllm:request_success_total", finished_reason="length") == 1e6
    assert len(m.series("vllm:request_success_total", model_name="m")) == 3


def test_extract_maps_vllm_metrics_to_timeseries_columns():
    values = prometheus.extract(prometheus.parse(SCRAPE))
    assert values["prompt_tokens_total"] == 1_234_567.0 and values["num_running"] == 42.0
    assert values["num_waiting"] is None  # not exported in this scrape


@pytest.mark.parametrize("value", [0.0, 1.0, 999_999.0, 1e6, 1_234_567.0, 3.5e9, 123_456_789_012.0, 0.25])
def test_prometheus_client_float_format_round_trips(value):
    text = go_float(value)
    if value >= 1e6:
        assert "e+" in text  # the format that broke the corpus's poller
    assert prometheus.parse(f"x {text}\n").first("x") == value


@pytest.mark.parametrize("bad", ['x{a="unterminated} 1', "x", "x 1 2 3", "x{a=1} 2", "x notanumber"])
def test_parser_rejects_bad_lines_naming_them(bad):
    with pytest.raises(prometheus.PrometheusParseError, match="line 2"):
        prometheus.parse("ok 1\n" + bad + "\n")


def test_poller_records_failed_polls_as_gaps():
    calls = iter([OSError("Cannot assign requested address"), "vllm:num_requests_running 3\n"])

    def fetch(url: str, timeout: float) -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    poller = prometheus.MetricsPoller("http://x/metrics", fetch=fetch)
    assert poller.poll_once() is None and "Cannot assign" in poller.errors[0]
    assert poller.poll_once().values["num_running"] == 3.0
    assert len(poller.samples) == 1


def test_poller_stop_takes_a_closing_scrape_after_the_loop():
    counter = iter(range(100))

    def fetch(url: str, timeout: float) -> str:
        return f"vllm:num_requests_running {next(counter)}\n"

    poller = prometheus.MetricsPoller("http://x/metrics", interval_s=60.0, fetch=fetch).start()
    deadline = time.monotonic() + 10
    while not poller.scrapes and time.monotonic() < deadline:  # the loop's first scrape
        time.sleep(0.01)
    samples = poller.stop()  # the loop now waits 60 s; stop() interrupts it and scrapes once more
    assert [s.values["num_running"] for s in samples] == [0.0, 1.0]
    assert samples[1].time_raw > samples[0].time_raw and not poller.errors


def test_poller_takes_its_first_scrape_on_the_callers_thread_before_start_returns():
    """The series begins before the run: a first scrape left to the thread came after a short run."""
    import threading

    threads = []

    def fetch(url: str, timeout: float) -> str:
        threads.append(threading.current_thread())
        return "vllm:num_requests_running 0\n"

    poller = prometheus.MetricsPoller("http://x/metrics", interval_s=60.0, fetch=fetch).start()
    assert threads == [threading.current_thread()] and poller.scrapes == 1
    assert len(poller.stop()) == 2  # the closing scrape; the loop's 60 s wait was interrupted


# --- dummy adapters -----------------------------------------------------------------------------------------

TINY = adapters.ModelShape(
    hidden_size=16, intermediate_size=24, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=4
)


def test_dummy_adapter_has_valid_peft_config_and_zero_weights_of_the_rank(tmp_path):
    modules = ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")
    folder = adapters.create_dummy_adapter(tmp_path / "a", 8, TINY, "org/Tiny-Model", modules)
    cfg = json.loads((folder / adapters.CONFIG_NAME).read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16 and cfg["peft_type"] == "LORA"
    assert cfg["target_modules"] == list(modules) and cfg["base_model_name_or_path"] == "org/Tiny-Model"
    raw = (folder / adapters.WEIGHTS_NAME).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert header_len % 8 == 0 and json.loads(raw[8 : 8 + header_len])["__metadata__"] == {"format": "pt"}
    tensors = adapters.read_safetensors(folder / adapters.WEIGHTS_NAME)
    assert len(tensors) == 2 * len(modules) * TINY.num_layers
    layer0 = "base_model.model.model.layers.0"
    assert tensors[f"{layer0}.self_attn.q_proj.lora_A.weight"].shape == (8, 16)
    assert tensors[f"{layer0}.self_attn.q_proj.lora_B.weight"].shape == (16, 8)
    assert tensors[f"{layer0}.self_attn.k_proj.lora_B.weight"].shape == (8, 8)  # 2 kv heads x 4
    assert tensors[f"{layer0}.mlp.down_proj.lora_A.weight"].shape == (8, 24)
    assert all(t.dtype == np.float16 and not t.any() for t in tensors.values())
    assert len(raw) == 8 + header_len + sum(t.nbytes for t in tensors.values())


def test_ensure_adapters_reuses_folders_and_checks_inputs(tmp_path):
    paths = adapters.ensure_adapters(tmp_path, [16, 8, 16], "org/Tiny", TINY)
    assert sorted(paths) == [8, 16] and paths[8].name == "dummy_rank_8"
    stamp = (paths[8] / adapters.WEIGHTS_NAME).stat().st_mtime_ns
    adapters.ensure_adapters(tmp_path, [8], "org/Tiny", TINY)
    assert (paths[8] / adapters.WEIGHTS_NAME).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="rank"):
        adapters.create_dummy_adapter(tmp_path / "bad", 0, TINY, "org/Tiny")
    with pytest.raises(ValueError, match="lm_head"):
        adapters.create_dummy_adapter(tmp_path / "bad", 4, TINY, "org/Tiny", ("lm_head",))


def test_model_shape_from_known_table_local_config_and_override(tmp_path):
    llama3 = adapters.resolve_model_shape("meta-llama/Llama-3.1-8B-Instruct")
    assert llama3.module_shape("k_proj") == (4096, 1024) and llama3.num_layers == 32
    hf = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 8}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    assert adapters.resolve_model_shape(str(tmp_path)).head_dim == 8
    assert adapters.resolve_model_shape("whatever", override=hf).num_kv_heads == 8


# --- config grid and the vllm serve command line ------------------------------------------------------------

CONFIG = {
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "subfamily": "rank_16",
    "server": {"port": 8123, "max_num_seqs": 2048, "extra_args": ["--max-model-len", "8192"]},
    "adapters": {"ranks": [8, 16, 32]},
    "grid": {"max_loras": [8, 32], "max_cpu_loras": [16, 64], "max_lora_rank": [16]},
    "benchmark": {"mode": "by_time", "total_time_s": 60, "adapter_rates": [0.1, 0.05]},
}


def test_grid_skips_served_below_slots_and_names_runs_like_the_launcher():
    specs = expand(config_from_dict(CONFIG))
    assert [s.run_id.rsplit("/", 1)[-1] for s in specs] == ["_8_16_16_", "_8_64_16_", "_32_64_16_"]
    assert specs[0].run_id == "profiling/llama-3.1-8b-instruct/rank_16/_8_16_16_"
    assert specs[0].adapter_ranks == (8, 16)  # rank 32 does not fit S_max 16
    assert specs[1].served_adapters == 64
    assert folder_name([400], [1, 200]) == "_400__1_200" and folder_name([128, 16], []) == "_128_16_"


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="grid.max_lora"):
        config_from_dict({**CONFIG, "grid": {"max_lora": [1]}})
    with pytest.raises(ValueError, match="num_prompts"):
        expand(config_from_dict({**CONFIG, "benchmark": {"mode": "fixed_count"}}))
    with pytest.raises(ValueError, match="fits max_lora_rank"):
        expand(config_from_dict({**CONFIG, "adapters": {"ranks": [64]}}))


def test_vllm_serve_command_line_from_config():
    spec = expand(config_from_dict(CONFIG))[1]
    modules = {f"dummy-{i}": f"/ad/dummy_rank_{(8, 16)[i % 2]}" for i in range(spec.served_adapters)}
    cmd = server.build_command(spec.server, modules)
    assert cmd[:3] == ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct"]
    text = " ".join(cmd)
    for flag in (
        "--enable-lora",
        "--max-loras 8",
        "--max-cpu-loras 64",
        "--max-lora-rank 16",
        "--max-num-seqs 2048",
        "--port 8123",
        "--host 127.0.0.1",
        "--no-enable-prefix-caching",
    ):
        assert flag in text
    lora = cmd[cmd.index("--lora-modules") + 1 : cmd.index("--max-model-len")]
    assert lora[:2] == ["dummy-0=/ad/dummy_rank_8", "dummy-1=/ad/dummy_rank_16"] and len(lora) == 64
    base = server.build_command(server.ServerArgs("m", None, None, None, 256), {})
    assert "--enable-lora" not in base and "--lora-modules" not in base


# --- environment check and the server process ---------------------------------------------------------------


def test_missing_vllm_and_gpu_stop_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(server, "vllm_installed", lambda: False)
    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    with pytest.raises(server.ProfilingUnavailable) as err:
        server.check_environment()
    message = str(err.value)
    assert "`vllm` Python package" in message and "vllm==0.8.5" in message and "nvidia-smi" in message
    assert "backend: replay" in message


def test_gpu_check_needs_a_listed_gpu(monkeypatch):
    monkeypatch.setattr(server.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    result = subprocess.CompletedProcess([], 9, stdout="", stderr="NVIDIA-SMI has failed")
    monkeypatch.setattr(server.subprocess, "run", lambda *a, **k: result)
    assert "lists no CUDA GPU" in server.gpu_problem()
    monkeypatch.setattr(server, "vllm_installed", lambda: True)
    with pytest.raises(server.ProfilingUnavailable, match="NVIDIA-SMI has failed"):
        server.check_environment()
    ok = subprocess.CompletedProcess([], 0, stdout="GPU 0: NVIDIA H100 (UUID: x)\n", stderr="")
    monkeypatch.setattr(server.subprocess, "run", lambda *a, **k: ok)
    assert server.gpu_problem() is None
    server.check_environment()


def test_server_that_exits_is_reported_with_its_logs(tmp_path):
    crash = "import sys; sys.stderr.write('torch.OutOfMemoryError: CUDA out of memory.\\n'); sys.exit(1)"
    srv = server.VllmServer(
        [sys.executable, "-c", crash], "http://127.0.0.1:9", tmp_path, ready_timeout_s=20, poll_s=0.1
    )
    with pytest.raises(server.ServerStartError, match="exited with code 1") as err:
        srv.__enter__()
    assert "CUDA out of memory" in err.value.log_texts["server_err.log"]
    assert (tmp_path / "server_command.txt").exists()


def test_server_not_ready_in_time_is_stopped(tmp_path):
    hang = [sys.executable, "-c", "import time; time.sleep(30)"]
    srv = server.VllmServer(hang, "http://127.0.0.1:9", tmp_path, ready_timeout_s=0.3, poll_s=0.1)
    with pytest.raises(server.ServerStartError, match="did not start on time"):
        with srv:
            pass
    assert srv.process.poll() is not None  # stopped, not left running


# --- schedules and the summary statistics -------------------------------------------------------------------


def test_schedules_are_seeded_and_poisson():
    one = fixed_count_schedule(50, ["a", "b"], 5.0, 4, 3, np.random.default_rng(7))
    two = fixed_count_schedule(50, ["a", "b"], 5.0, 4, 3, np.random.default_rng(7))
    assert [(r.arrival_s, r.model, r.prompt) for r in one] == [(r.arrival_s, r.model, r.prompt) for r in two]
    assert [r.model for r in one[:4]] == ["a", "b", "a", "b"] and one[0].arrival_s == 0.0
    assert len(one[0].prompt) == 4 and one[0].output_len == 3
    burst = fixed_count_schedule(5, ["a"], math.inf, 4, 3, np.random.default_rng(0))
    assert {r.arrival_s for r in burst} == {0.0}
    times = poisson_arrivals(np.random.default_rng(1), 10.0, 1000.0)
    assert abs(len(times) - 10_000) < 400 and times.max() < 1000.0
    assert abs(np.diff(times).mean() - 0.1) < 0.005


def test_rates_are_assigned_cyclically_then_shuffled():
    names = [f"dummy-{i}" for i in range(10)]
    rates = assign_rates(names, [0.1, 0.05, 0.025], np.random.default_rng(0))
    assert sorted(rates) == sorted(names)
    assert sorted(rates.values()) == sorted([0.1, 0.05, 0.025] * 3 + [0.1])
    assert rates == assign_rates(names, [0.1, 0.05, 0.025], np.random.default_rng(0))


def _out(i, ok=True, ttft=0.1, latency=1.0, itl=(), n_out=10, n_in=5):
    return RequestOutput(
        i,
        "m",
        success=ok,
        ttft_s=ttft,
        latency_s=latency,
        itl_s=list(itl),
        prompt_tokens=n_in,
        output_tokens=n_out,
    )


def test_summary_matches_the_benchmark_formulas():
    outs = [
        _out(0, ttft=0.1, latency=1.0, itl=[0.1] * 9),
        _out(1, ttft=0.3, latency=2.1, itl=[0.2] * 9),
        _out(2, ok=False, n_out=0),
    ]
    s = summarize(outs, duration_s=4.0)
    assert s["successful_requests"] == 2 and s["total_input_tokens"] == 10 and s["total_output_tokens"] == 20
    assert s["request_throughput"] == 0.5 and s["output_throughput"] == 5.0 and s["total_throughput"] == 7.5
    assert s["ttft_mean_ms"] == pytest.approx(200.0) and s["ttft_median_ms"] == pytest.approx(200.0)
    assert s["ttft_p99_ms"] == pytest.approx(100 + 200 * 0.99)
    assert s["tpot_mean_ms"] == pytest.approx(((0.9 / 9) + (1.8 / 9)) / 2 * 1000)
    assert s["itl_mean_ms"] == pytest.approx(150.0) and s["itl_p99_ms"] == pytest.approx(200.0)
    # fixed-count benchmark of the corpus: a failed request enters TTFT with TTFT = duration
    fixed = summarize(outs, duration_s=4.0, failed_ttft_as_duration=True)
    assert fixed["ttft_mean_ms"] == pytest.approx((100 + 300 + 4000) / 3)
    assert fixed["successful_requests"] == 2


def test_summary_with_one_output_token_has_zero_tpot_and_itl():
    s = summarize([_out(0, n_out=1, latency=0.1)], duration_s=1.0)
    assert s["tpot_mean_ms"] == 0.0 and s["itl_mean_ms"] == 0.0 and s["itl_p99_ms"] == 0.0


def test_example_config_expands():
    specs = expand(load_config(Path(__file__).resolve().parents[1] / "profiling" / "example.yaml"))
    assert [s.run_id.rsplit("/", 1)[-1] for s in specs] == [
        "_8_32_16_",
        "_8_128_16_",
        "_32_32_16_",
        "_32_128_16_",
    ]
    assert all(s.benchmark.mode == "by_time" and s.adapter_ranks == (8, 16) for s in specs)


def test_model_names_follow_the_corpus():
    assert model_key("Qwen/Qwen2.5-7B-Instruct") == "qwen-2.5-7b-instruct"
    assert model_key("meta-llama/Llama-2-13b-hf") == "llama-2-13b"
    assert model_key("/models/Llama-3.1-8B-Instruct/") == "llama-3.1-8b-instruct"
    assert adapters.resolve_model_shape("Qwen/Qwen2.5-7B-Instruct").module_shape("v_proj") == (3584, 512)


# --- kv_capacity from the captured server logs --------------------------------------------------------------

# lines as in the corpus's server_out.log / server_err.log (vLLM 0.8.5)
SERVER_OUT = """INFO 05-19 18:43:10 [api_server.py:1046] vLLM API server version 0.8.5
INFO 05-19 18:44:10 [gpu_model_runner.py:1347] Model loading took 29.0155 GiB and 36.909102 seconds
INFO 05-19 18:45:15 [kv_cache_utils.py:634] GPU KV cache size: 430,432 tokens
"""
KV_ERROR = (
    "ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is "
    "needed, which is larger than the available KV cache memory (3.49 GiB). Based on the available memory,  "
    "Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.\n"
)
RUN = {"run_id": "profiling/m/_384_8_", "model": "m", "max_loras": 384, "max_lora_rank": 8, "status": "ok"}


def test_kv_capacity_row_reads_the_startup_lines_with_the_ingest_parser():
    logs = {"server_err.log": "", "server_out.log": SERVER_OUT}
    row = writers.kv_capacity_row({**RUN, "reason": None}, logs)
    assert row["kv_tokens"] == 430_432 and row["model_memory_gib"] == 29.0155
    assert row["model_loading_s"] == 36.909102 and row["kv_needed_gib"] is None
    assert (row["max_loras"], row["max_lora_rank"], row["status"]) == (384, 8, "ok")
    assert row["run_id"] == RUN["run_id"] and row["model"] == "m"
    frame = writers.to_frame("kv_capacity", [row])
    assert frame.schema == schema.polars_schema("kv_capacity") and frame.height == 1


def test_kv_capacity_row_of_a_server_that_refused_to_start():
    logs = {"server_err.log": KV_ERROR, "server_out.log": SERVER_OUT.splitlines()[1]}
    status, reason = classify_failure(logs)
    row = writers.kv_capacity_row({**RUN, "status": status, "reason": reason}, logs)
    assert row["status"] == "memory_error" and "KV cache below one max-length sequence" in row["reason"]
    assert row["kv_tokens"] is None and row["model_memory_gib"] == 29.0155
    assert (row["kv_needed_gib"], row["kv_available_gib"]) == (16.0, 3.49)
    assert writers.kv_capacity_row({**RUN, "reason": None}, {})["kv_tokens"] is None  # no logs at all
