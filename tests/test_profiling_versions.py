"""The harness against what vLLM 0.8.5 (the corpus's GPU version) and current releases differ in, checked
without vLLM: command lines and flags per version, the LoRA ranks each accepts, ``--lora-modules`` items with
``=`` or ``,`` in their paths, stopping a server whose child outlives it, no per-request timeout in by-time
runs, a warm-up before by-time runs, text prompts that end at EOS, scrapes parsed after the run, current
metric names, and the exported serve scripts (device selection, flags) and routing table."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from adaptwin.placement.core import Gpu, Placement
from adaptwin.placement.export import routing_table, write_placement
from adaptwin.profiling import client, runner, server
from adaptwin.profiling.config import config_from_dict, expand
from adaptwin.profiling.fake import FakeOpenAIServer
from adaptwin.profiling.prometheus import MetricsPoller, parse, sample_from_text

CONFIG = {
    "model": "org/Tiny",
    "work_dir": "unused",
    "adapters": {"ranks": [8, 16], "model_shape": {
        "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
    }},
    "grid": {"max_loras": [2], "max_cpu_loras": [3], "max_lora_rank": [16]},
    "benchmark": {"mode": "fixed_count", "num_prompts": 4, "input_len": 5, "output_len": 4},
    "poller": {"interval_s": 0.05, "tail_s": 0.2},
}


def _spec(**benchmark):
    cfg = config_from_dict({**CONFIG, "benchmark": {**CONFIG["benchmark"], **benchmark}})
    return expand(cfg)[0], cfg


def test_command_line_follows_the_target_version():
    spec, _ = _spec()
    legacy = server.build_command(spec.server, {"a": "/x"}, version="0.8.5")
    assert legacy[:3] == ["vllm", "serve", "org/Tiny"] and "--disable-log-requests" in legacy
    assert legacy[legacy.index("--max-num-batched-tokens") + 1] == "2048"
    current = server.build_command(replace(spec.server, python="/env/bin/python"), {"a": "/x"}, version="0.32.0")
    assert current[:5] == ["/env/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "org/Tiny"]
    assert "--disable-log-requests" not in current and "--no-enable-prefix-caching" in current
    assert current[current.index("--max-num-batched-tokens") + 1] == "2048"


def test_lora_modules_with_equals_or_comma_in_the_path_use_the_json_form():
    assert server.lora_module_arg("a", "/plain/path") == "a=/plain/path"
    for path in ("/runs/x=1/ad", "/runs/a,b/ad"):
        item = server.lora_module_arg("dummy-0", path)
        assert json.loads(item) == {"name": "dummy-0", "path": path}


def test_ranks_are_checked_against_the_version():
    assert server.allowed_ranks("0.8.5") == (8, 16, 32, 64, 128, 256, 320, 512)
    assert 1 in server.allowed_ranks("0.32.0") and 1 not in server.allowed_ranks(None)
    server.check_rank(1, "0.32.0", "f.yaml")
    with pytest.raises(ValueError, match=r"f\.yaml: max_lora_rank 1 is not accepted by vLLM 0\.8\.5"):
        server.check_rank(1, "0.8.5", "f.yaml")
    with pytest.raises(ValueError, match=r"max_lora_rank 24 .* \(allowed: 1, 8, 16"):
        server.check_rank(24, "0.32.0", "f.yaml")


def test_a_refused_rank_stops_before_any_server_starts(tmp_path):
    cfg = config_from_dict({**CONFIG, "grid": {"max_loras": [2], "max_lora_rank": [24]}}, source="p.yaml")
    started = []

    def factory(spec, modules, run_dir):
        started.append(spec)
        raise AssertionError("no server may start")

    with pytest.raises(ValueError, match=r"p\.yaml: run .*max_lora_rank 24"):
        runner.run_all(cfg, tmp_path / "work", factory)
    assert not started and not (tmp_path / "work").exists()


CHILD = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(120)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(120)
"""


def test_stop_waits_for_the_child_that_ignores_sigint(tmp_path):
    pid_file = tmp_path / "child.pid"
    srv = server.VllmServer(
        [sys.executable, "-c", CHILD, str(pid_file)], "http://127.0.0.1:9", tmp_path, ready_timeout_s=5
    )
    srv.start()
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    srv.stop(grace_s=1.0)
    assert not server.group_alive(srv.process)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


@pytest.fixture
def fake():
    with FakeOpenAIServer(model="org/Tiny", adapters=("dummy-0", "dummy-1", "dummy-2"), ttft_s=0.05,
                          itl_s=0.01, version="0.8.5") as srv:
        yield srv


def test_by_time_requests_have_no_per_request_timeout(fake):
    requests = [client.Request(i, 0.0, "dummy-0", [1, 2, 3], 3, 5) for i in range(3)]
    timed = client.run_benchmark(fake.base_url, requests, window_s=1.0, timeout_s=0.01)
    assert [o.success for o in timed.outputs] == [True] * 3  # 0.09 s each, far above the 0.01 s limit
    fixed = client.run_benchmark(fake.base_url, requests, None, timeout_s=0.01)
    assert not any(o.success for o in fixed.outputs) and "TimeoutError" in fixed.outputs[0].error


def test_by_time_runs_warm_up_and_record_the_server_version(fake, tmp_path):
    spec, cfg = _spec(mode="by_time", total_time_s=1.0, adapter_rates=[8.0])
    (warm,) = runner.warmup_requests(spec, ["dummy-0"])
    assert warm.model == "org/Tiny"
    fake.version = "0.8.5+fork"

    def factory(spec, modules, run_dir):
        return contextlib.nullcontext(fake)

    outcome = runner.run_one(spec, cfg, tmp_path / "work", factory)
    assert outcome.run["status"] == "ok" and outcome.run["vllm_version"] == "0.8.5"
    series = pl.read_parquet(tmp_path / "work" / "runs" / spec.run_id / "server_series.parquet")
    assert series["finished_total"][0] >= 1  # the warm-up finished before the first poll


def test_sharegpt_prompts_are_text_and_end_at_eos(fake, tmp_path):
    data = [
        {"conversations": [{"from": "human", "value": "tell me a story"}, {"from": "gpt", "value": "once"}]},
        {"conversations": [{"from": "human", "value": "only one turn"}]},
    ]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(data))
    assert client.sharegpt_prompts(str(path)) == ["tell me a story"]
    requests = client.fixed_count_schedule(2, ["dummy-1"], math.inf, 5, 4, np.random.default_rng(0),
                                           client.sharegpt_prompts(str(path)))
    payload = client.completion_payload(requests[0])
    assert payload["prompt"] == "tell me a story" and "ignore_eos" not in payload
    result = client.run_benchmark(fake.base_url, requests, None, timeout_s=10)
    assert all(o.success and o.prompt_tokens == 4 for o in result.outputs)  # the server's count (words here)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"conversations": []}]))
    with pytest.raises(ValueError, match="bad.json: no conversation with two turns"):
        client.sharegpt_prompts(str(bad))
    spec, _ = _spec(dataset="sharegpt", dataset_path=str(path))
    assert not spec.benchmark.ignore_eos
    with pytest.raises(ValueError, match="benchmark.dataset_path"):
        _spec(dataset="sharegpt")


CURRENT_METRICS = """
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 2.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 5.0
vllm:lora_requests_info{max_lora="1",running_lora_adapters="a0",waiting_lora_adapters="a0,a1"} 1.79e+09
vllm:lora_requests_info{max_lora="1",running_lora_adapters="a2",waiting_lora_adapters="a2"} 1.80e+09
vllm:lora_requests_info{max_lora="1",running_lora_adapters="",waiting_lora_adapters=""} 1.70e+09
"""


def test_current_metric_names_and_the_latest_lora_state():
    sample = sample_from_text(1.0, CURRENT_METRICS)
    assert sample.values["gpu_cache_usage"] == 0.25 and sample.values["finished"] == 2.0
    assert sample.finished_total == 7.0
    assert sample.lora.running == ("a2",) and sample.lora.waiting == ("a2",) and sample.lora.max_lora == 1
    assert sample_from_text(1.0, "vllm:num_requests_running 1\n").lora is None
    assert parse(CURRENT_METRICS).first("vllm:gpu_cache_usage_perc") is None


def test_poller_keeps_raw_scrapes_and_parses_them_after_the_run():
    def fetch(url, timeout):
        return CURRENT_METRICS

    poller = MetricsPoller("http://x/metrics", interval_s=0.01, fetch=fetch).start()
    deadline = time.monotonic() + 10
    while poller.scrapes < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert poller.samples == [] and poller.timeout_s >= 30  # nothing parsed while the benchmark runs
    samples = poller.stop()
    assert len(samples) >= 4 and all(s.lora.running == ("a2",) for s in samples)


def _placement() -> Placement:
    workload = pl.DataFrame({"adapter_id": ["a", "b=1", "c"], "rank": [8, 16, 8], "rate": [1.0, 0.5, 0.2]})
    predicted = {"total_throughput": 100.0, "itl_mean_ms": 20.0, "starvation_probability": 0.0}
    gpus = [
        Gpu(members=(0, 1), max_loras=1, max_lora_rank=16, predicted=predicted, shares=(0.75, 1.0)),
        Gpu(members=(0, 2), max_loras=2, max_lora_rank=8, predicted=predicted, shares=(0.25, 1.0)),
    ]
    return Placement("tiny", "greedy", workload, gpus, lower_bound_gpus=1)


def test_routing_carries_endpoint_and_share_of_every_pair():
    routing = routing_table(_placement())
    assert routing.rows() == [
        ("a", 0, "http://127.0.0.1:8000/v1", 0.75),
        ("b=1", 0, "http://127.0.0.1:8000/v1", 1.0),
        ("a", 1, "http://127.0.0.1:8001/v1", 0.25),
        ("c", 1, "http://127.0.0.1:8001/v1", 1.0),
    ]


def _run_script(script, tmp_path, env):
    fake_python = tmp_path / "fake-python"
    fake_python.write_text('#!/usr/bin/env bash\necho "CVD=$CUDA_VISIBLE_DEVICES"\nprintf "%s\\n" "$@"\n')
    fake_python.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.run(["bash", str(script), "--extra"], capture_output=True, text=True, timeout=30,
                          env={**base, "VLLM_PYTHON": str(fake_python), **env})


def test_serve_script_takes_the_nth_inherited_device_and_the_twins_budget(tmp_path):
    write_placement(_placement(), tmp_path)
    script = tmp_path / "serve_gpu1.sh"
    done = _run_script(script, tmp_path, {"CUDA_VISIBLE_DEVICES": "4,6,7"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "CVD=6" and lines[1:4] == ["-m", "vllm.entrypoints.openai.api_server", "--model"]
    assert lines[4] == "tiny" and lines[-1] == "--extra"
    text = " ".join(lines)
    for flag in ("--max-loras 2", "--max-cpu-loras 2", "--max-lora-rank 8", "--max-num-batched-tokens 2048",
                 "--no-enable-prefix-caching", "--port 8001", "--host 127.0.0.1"):
        assert flag in text
    assert "a=adapters/a" in lines and "c=adapters/c" in lines
    zero = _run_script(tmp_path / "serve_gpu0.sh", tmp_path, {"ADAPTER_DIR": "/ad"}).stdout.splitlines()
    assert {"name": "b=1", "path": "/ad/b=1"} in [json.loads(x) for x in zero if x.startswith("{")]
    assert _run_script(script, tmp_path, {}).stdout.startswith("CVD=1\n")
    short = _run_script(script, tmp_path, {"CUDA_VISIBLE_DEVICES": "3"})
    assert short.returncode == 2 and short.stderr.strip() == (
        "serve_gpu1.sh: CUDA_VISIBLE_DEVICES=3 lists 1 device(s); GPU 1 is entry 2"
    )


@pytest.mark.parametrize("name", ["live.yaml", "live_saturated.yaml"])
def test_live_configs_target_the_cpu_build(name):
    from pathlib import Path

    from adaptwin.profiling.config import load_config

    specs = expand(load_config(Path(__file__).resolve().parents[1] / "profiling" / name))
    assert [s.server.max_loras for s in specs] == [1, 3]
    for spec in specs:
        assert spec.server.python.endswith(".venv-vllm/bin/python") and spec.server.env["VLLM_CPU_KVCACHE_SPACE"]
        assert spec.server.max_num_batched_tokens == 2048 and spec.benchmark.token_ids == (10, 2000)
        server.check_rank(spec.server.max_lora_rank, "0.32.0", name)
