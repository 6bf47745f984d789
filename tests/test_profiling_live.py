"""The profiling harness against a fake OpenAI-compatible server on 127.0.0.1 (random port, one thread per
connection, stopped at teardown): streaming client, TTFT/ITL, fixed-count and by-time modes, the /metrics
poller, and the runner writing the replay ingest's ``runs``/``timeseries``/``kv_capacity`` tables (with the
real launcher ``VllmServer`` capturing a fake server process's stdout), and which notebook-01 figures such
tables can draw."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import time

import numpy as np
import polars as pl
import pytest
import yaml

from adaptwin.figures import measurements as figs
from adaptwin.measurements import read_table, schema
from adaptwin.profiling import client, runner, server
from adaptwin.profiling.cli import run_from_config
from adaptwin.profiling.config import config_from_dict, expand
from adaptwin.profiling.fake import FakeOpenAIServer
from adaptwin.profiling.prometheus import MetricsPoller, fetch_text, parse

TTFT, ITL = 0.05, 0.02
SLACK = 0.5  # scheduling jitter allowed on 2 shared, busy cores (lower bounds are exact)


@pytest.fixture
def fake():
    with FakeOpenAIServer(model="tiny-base", adapters=("dummy-0", "dummy-1"), ttft_s=TTFT, itl_s=ITL) as srv:
        yield srv


def _requests(arrivals, model="dummy-0", output_len=5, input_len=7):
    return [
        client.Request(i, t, model, list(range(input_len)), input_len, output_len)
        for i, t in enumerate(arrivals)
    ]


def test_fake_server_lists_adapters_and_serves_scientific_counters(fake):
    assert server.list_models(fake.base_url) == ["tiny-base", "dummy-0", "dummy-1"]
    fake.state.prompt_tokens = 1_234_567.0
    text = fetch_text(fake.base_url + "/metrics", 5)
    assert "1.234567e+06" in text
    assert parse(text).first("vllm:prompt_tokens_total") == 1_234_567.0


def test_client_measures_ttft_itl_and_tokens(fake):
    result = client.run_benchmark(fake.base_url, _requests([0.0, 0.0, 0.1], output_len=6), None, timeout_s=10)
    assert [o.success for o in result.outputs] == [True] * 3
    for o in result.outputs:
        assert TTFT <= o.ttft_s < TTFT + SLACK
        assert len(o.itl_s) == 5 and all(0 <= g < ITL + SLACK for g in o.itl_s)
        assert o.latency_s >= TTFT + 5 * ITL  # the last token is sent after 5 gaps: an exact lower bound
        assert o.latency_s == pytest.approx(o.ttft_s + sum(o.itl_s))
        assert o.output_tokens == 6 and o.prompt_tokens == 7 and o.generated_text == " t0 t1 t2 t3 t4 t5"
    s = runner.summarize(result.outputs, result.duration_s)
    assert s["total_output_tokens"] == 18 and s["output_throughput"] == pytest.approx(18 / result.duration_s)
    assert TTFT * 1000 <= s["ttft_mean_ms"] < (TTFT + SLACK) * 1000
    assert ITL * 500 <= s["itl_median_ms"] < (ITL + SLACK) * 1000  # gaps can merge when reads lag
    assert s["tpot_mean_ms"] == pytest.approx(np.mean([sum(o.itl_s) / 5 for o in result.outputs]) * 1000)
    assert result.duration_s >= 0.1 + TTFT + 5 * ITL  # the last request arrives at 0.1 s


def test_client_reports_http_errors_as_failed_requests(fake):
    result = client.run_benchmark(fake.base_url, _requests([0.0], model="no-such-adapter"), None, timeout_s=5)
    assert not result.outputs[0].success and "HTTP 404" in result.outputs[0].error
    closed = client.run_benchmark("http://127.0.0.1:9", _requests([0.0]), None, timeout_s=5)
    assert not closed.outputs[0].success and closed.outputs[0].error


def test_by_time_window_cancels_running_requests_and_skips_late_arrivals(fake):
    # each request takes ~TTFT + 19 x ITL = 0.43 s; window 1.0 s
    requests = _requests([0.0, 0.1, 0.8, 1.2], output_len=20)
    result = client.run_benchmark(fake.base_url, requests, window_s=1.0, timeout_s=10)
    assert [o.index for o in result.outputs] == [0, 1]  # 0.8 s is cancelled at 1.0 s, 1.2 s never sent
    assert result.cancelled == 1
    assert 1.0 <= result.duration_s < 1.0 + SLACK
    # every request sent is recorded with its send time, the cancelled one too, never before it was due
    assert sorted(result.sent_s) == [0, 1, 2]
    assert all(requests[i].arrival_s - 0.005 <= t < requests[i].arrival_s + SLACK for i, t in result.sent_s.items())


def test_fixed_count_sends_every_request_spread_over_targets(fake):
    requests = client.fixed_count_schedule(8, ["dummy-0", "dummy-1"], 40.0, 5, 3, np.random.default_rng(3))
    result = client.run_benchmark(fake.base_url, requests, None, timeout_s=10)
    assert len(result.outputs) == 8 and all(o.success for o in result.outputs)
    assert [o.model for o in result.outputs].count("dummy-1") == 4
    assert result.duration_s >= requests[-1].arrival_s


def test_poller_samples_metrics_across_the_1e6_boundary(fake):
    fake.state.prompt_tokens = 999_990.0
    with MetricsPoller(fake.base_url + "/metrics", interval_s=0.05) as poller:
        time.sleep(0.15)
        client.run_benchmark(
            fake.base_url, _requests([0.0, 0.0], input_len=50, output_len=2), None, timeout_s=5
        )
        time.sleep(0.15)
    samples = poller.samples
    assert len(samples) >= 4 and not poller.errors
    assert all(b.time_raw > a.time_raw for a, b in zip(samples, samples[1:], strict=False))
    prompt = [s.values["prompt_tokens_total"] for s in samples]
    assert prompt[0] == 999_990.0 and prompt[-1] == 1_000_090.0 and prompt == sorted(prompt)
    assert samples[-1].values["finished"] == 0.0  # the 'stop' series; requests end by length


# --- the runner and the tables ------------------------------------------------------------------------------

TINY_SHAPE = {
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def _config(tmp_path, benchmark, grid=None):
    return {
        "model": "org/Tiny-Base",
        "subfamily": "test",
        "work_dir": str(tmp_path / "work"),
        "adapters": {"ranks": [8, 16], "model_shape": TINY_SHAPE},
        "grid": grid or {"max_loras": [2], "max_cpu_loras": [2, 4], "max_lora_rank": [16]},
        "benchmark": {"input_len": 6, "output_len": 4, "request_timeout_s": 10, **benchmark},
        "poller": {"interval_s": 0.05, "tail_s": 0.3},
    }


@contextlib.contextmanager
def fake_factory(spec, modules, run_dir):
    """Stand-in for ``vllm serve``: a fake server registering exactly the run's adapters."""
    with FakeOpenAIServer(
        model=spec.model, adapters=tuple(modules), ttft_s=0.01, itl_s=0.005, prompt_tokens_start=999_980.0
    ) as srv:
        yield srv


def test_runner_fixed_count_writes_tables_with_the_replay_schema(tmp_path):
    cfg = tmp_path / "profile.yaml"
    cfg.write_text(
        yaml.safe_dump(
            _config(tmp_path, {"mode": "fixed_count", "num_prompts": 6, "request_rate_by_lora": math.inf})
        )
    )
    report = run_from_config(cfg, tmp_path / "out", factory=fake_factory)
    runs = pl.read_parquet(tmp_path / "out" / "runs.parquet")
    series = pl.read_parquet(tmp_path / "out" / "timeseries.parquet")
    assert runs.schema == schema.polars_schema("runs") and series.schema == schema.polars_schema("timeseries")
    assert report.status_counts() == {"ok": 2}
    row = runs.row(1, named=True)
    assert row["run_id"] == "profiling/tiny-base/test/_2_4_16_" and row["served_adapters"] == 4
    assert row["adapter_ranks"] == [8, 16] and row["lora_modules"] == ["dummy_rank_8", "dummy_rank_16"]
    assert (
        row["successful_requests"] == 6
        and row["total_output_tokens"] == 24
        and row["total_input_tokens"] == 36
    )
    assert row["benchmark"] == "fixed_count" and math.isinf(row["request_rate"]) and row["num_prompts"] == 6
    assert row["output_throughput"] == pytest.approx(24 / row["duration_s"])
    assert row["window_end"] - row["window_start"] == pytest.approx(row["duration_s"])
    mine = series.filter(pl.col("run_id") == row["run_id"])
    assert mine.height == row["n_samples"] >= 2 and mine["sample"].to_list() == list(range(mine.height))
    assert mine["prompt_tokens_total"].max() > 1_000_000  # no overflow to 0 above 1e6
    assert mine["prompt_tokens_total"].null_count() == 0
    assert mine.filter(pl.col("in_window"))["t_s"].is_between(0, row["duration_s"]).all()
    run_dir = tmp_path / "work" / "runs" / row["run_id"]
    (result_json,) = run_dir.glob("openai-infqps-tiny-base-*.json")
    assert json.loads(result_json.read_text())["completed"] == 6
    per_request = pl.read_parquet(run_dir / "requests.parquet")
    assert per_request.height == 6 and per_request["output_tokens"].sum() == 24
    assert per_request["itl_s"].list.len().to_list() == [3] * 6
    kv = pl.read_parquet(tmp_path / "out" / "kv_capacity.parquet")
    assert kv.schema == schema.polars_schema("kv_capacity") and kv.equals(report.kv_capacity)
    assert kv["run_id"].to_list() == runs["run_id"].to_list() and kv["status"].to_list() == ["ok", "ok"]
    assert kv["kv_tokens"].null_count() == 2  # the in-process fake prints no startup lines
    # notebook 01 with backend vllm: only the figures whose inputs a profile writes are drawn (none here)
    out = tmp_path / "out"
    assert figs.available_tables(out) == ["runs", "timeseries", "kv_capacity"]
    tables = {name: read_table(out, name) for name in figs.available_tables(out)}
    assert figs.skip_reason("fig7", tables) == (
        "Fig. 7 (scheduler overhead) not drawn: there is no scheduler_overhead table."
    )
    assert "runs has no run of family motivation_without_slots or motivation_with_slots" in (
        figs.skip_reason("fig1", tables)
    )
    assert figs.missing_inputs("fig6", tables) == [
        "runs has no run of family loading_overhead",
        "there is no lora_load_times table",
    ]
    assert all(figs.skip_reason(f, tables) for f in figs.FIGURE_INPUTS)


def test_runner_by_time_records_rates_and_window(tmp_path):
    cfg = config_from_dict(
        _config(
            tmp_path,
            {"mode": "by_time", "total_time_s": 1.0, "adapter_rates": [4.0, 2.0]},
            grid={"max_loras": [2], "max_cpu_loras": [3]},
        )
    )
    outcomes = runner.run_all(cfg, tmp_path / "work", factory=fake_factory)
    row = outcomes[0].run
    assert row["status"] == "ok" and row["benchmark"] == "by_time" and row["total_time_s"] == 1.0
    assert row["adapter_rates"] == [2.0, 4.0] and row["adapter_rate_counts"] == [1, 2]
    assert 1.0 <= row["duration_s"] < 1.0 + SLACK and row["successful_requests"] > 0


def test_figures_with_their_inputs_are_drawn():
    runs = pl.DataFrame({"family": ["memory_overhead", "profiling"]})
    tables = {"runs": runs, "scheduler_overhead": pl.DataFrame({"rate": [1.0]}), "timeseries": pl.DataFrame()}
    assert figs.skip_reason("fig4", tables) is None and figs.skip_reason("fig7", tables) is None
    assert figs.missing_inputs("fig6", tables) == [
        "runs has no run of family loading_overhead",
        "the timeseries table is empty",
        "there is no lora_load_times table",
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


KV_ERROR = (
    "ValueError: To serve at least one request with the models's max seq len (4096), (2.00 GiB KV cache is "
    "needed, which is larger than the available KV cache memory (0.50 GiB). Try increasing "
    "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
)


def launcher_factory(spec, modules, run_dir):
    """The real launcher on a fake ``vllm serve``: a process printing vLLM's startup lines (A_max 4: then the
    KV-cache error, exit 1), else serving the run's adapters on a free port."""
    port = _free_port()
    if spec.server.max_loras == 4:
        script = (
            "import sys; print('INFO [gpu_model_runner.py:1347] Model loading took 1.5 GiB and 0.2 seconds',"
            f" flush=True); sys.stderr.write({KV_ERROR!r}); sys.exit(1)"
        )
        command = [sys.executable, "-c", script]
    else:
        kv_tokens = 50_000 - 100 * spec.server.max_loras * spec.server.max_lora_rank
        command = [
            sys.executable,
            "-m",
            "adaptwin.profiling.fake",
            "--port",
            str(port),
            "--model",
            spec.model,
        ]
        command += ["--adapters", *modules, "--ttft-s", "0.01", "--itl-s", "0.005"]
        command += ["--kv-tokens", str(kv_tokens), "--model-memory-gib", "1.25"]
    return server.VllmServer(command, f"http://127.0.0.1:{port}", run_dir, ready_timeout_s=60, poll_s=0.1)


def test_kv_capacity_from_the_captured_stdout_of_the_launched_server(tmp_path):
    cfg = tmp_path / "profile.yaml"
    benchmark = {"mode": "fixed_count", "num_prompts": 4}
    grid = {"max_loras": [2, 4], "max_cpu_loras": [4], "max_lora_rank": [16]}
    cfg.write_text(yaml.safe_dump(_config(tmp_path, benchmark, grid=grid)))
    report = run_from_config(cfg, tmp_path / "out", factory=launcher_factory)
    assert report.runs["status"].to_list() == ["ok", "memory_error"]
    kv = read_table(tmp_path / "out", "kv_capacity")
    assert kv.equals(report.kv_capacity) and kv["run_id"].to_list() == report.runs["run_id"].to_list()
    ok, failed = kv.rows(named=True)
    assert (ok["model"], ok["max_loras"], ok["max_lora_rank"]) == ("tiny-base", 2, 16)
    assert ok["kv_tokens"] == 50_000 - 100 * 2 * 16 and ok["model_memory_gib"] == 1.25
    assert ok["status"] == "ok" and ok["reason"] is None and ok["kv_needed_gib"] is None
    out_log = tmp_path / "work" / "runs" / ok["run_id"] / "server_out.log"
    assert "GPU KV cache size: 46,800 tokens" in out_log.read_text()
    assert failed["status"] == "memory_error" and failed["kv_tokens"] is None
    assert "KV cache below one max-length sequence" in failed["reason"]
    assert failed["reason"] == report.runs.row(1, named=True)["reason"]
    assert failed["model_memory_gib"] == 1.5 and failed["model_loading_s"] == 0.2
    assert (failed["kv_needed_gib"], failed["kv_available_gib"]) == (2.0, 0.5)


def test_server_start_failure_becomes_a_row_with_status_and_reason(tmp_path):
    def oom_factory(spec, modules, run_dir):
        raise server.ServerStartError(
            "vllm serve exited with code 1",
            {"server_err.log": "torch.OutOfMemoryError: CUDA out of memory. Tried"},
        )

    cfg = config_from_dict(
        _config(tmp_path, {"mode": "fixed_count", "num_prompts": 2}, grid={"max_loras": [2]})
    )
    outcome = runner.run_one(expand(cfg)[0], cfg, tmp_path / "work", oom_factory)
    row = outcome.run
    assert row["status"] == "memory_error" and "CUDA out of memory" in row["reason"]
    assert row.get("successful_requests") is None and row["served_adapters"] == 2
    kv = outcome.kv_capacity
    assert (kv["status"], kv["reason"], kv["kv_tokens"]) == ("memory_error", row["reason"], None)


def test_profile_command_without_vllm_or_gpu_exits_2_with_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(server, "vllm_installed", lambda: False)
    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump(_config(tmp_path, {"mode": "fixed_count", "num_prompts": 2})))
    from adaptwin.cli import main

    assert main(["profile", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "`vllm` Python package is not installed" in err and "nvidia-smi" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()  # stopped before any work


def test_server_missing_adapters_mid_run_becomes_a_row(tmp_path):
    @contextlib.contextmanager
    def no_adapters(spec, modules, run_dir):
        with FakeOpenAIServer(model=spec.model, adapters=()) as srv:
            yield srv

    cfg = config_from_dict(
        _config(tmp_path, {"mode": "fixed_count", "num_prompts": 2}, grid={"max_loras": [2]})
    )
    row = runner.run_one(expand(cfg)[0], cfg, tmp_path / "work", no_adapters).run
    assert row["status"] == "no_summary" and "lists 0 of 2 adapters" in row["reason"]


def test_launcher_refuses_a_port_where_another_server_answers(fake, tmp_path):
    srv = server.VllmServer([sys.executable, "-c", "pass"], fake.base_url, tmp_path, ready_timeout_s=5)
    with pytest.raises(server.ServerStartError, match="address already in use") as err:
        srv.__enter__()
    assert srv.process is None  # never started: it would have measured the other server
    assert runner.classify_failure(err.value.log_texts)[0] == "crash"  # the ingest's 'port clash'


@pytest.mark.gpu
@pytest.mark.slow
def test_real_vllm_profile_smoke(tmp_path):
    """On a GPU machine with `pip install .[gpu]`: a tiny real profile (model from ADAPTWIN_GPU_TEST_MODEL)."""
    try:
        server.check_environment()
    except server.ProfilingUnavailable as exc:
        pytest.skip(str(exc))
    model = os.environ.get("ADAPTWIN_GPU_TEST_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
    cfg = _config(
        tmp_path, {"mode": "fixed_count", "num_prompts": 8}, grid={"max_loras": [2], "max_cpu_loras": [4]}
    )
    cfg.update(model=model, adapters={"ranks": [8, 16]}, server={"port": 8765, "gpu_memory_utilization": 0.5})
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    report = run_from_config(tmp_path / "gpu.yaml", tmp_path / "out")
    assert report.status_counts() == {"ok": 1} and report.timeseries.height > 0
