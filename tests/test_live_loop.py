"""The live loop's pieces against the fake server: profiling rows give a calibration the twin loads, and the
validation JSON has the contract keys. The fake answers with fixed latencies, so the numbers are not the
point; the plumbing is (the live run is `make repro-live`)."""

from __future__ import annotations

import contextlib
import json

import polars as pl
import pytest
import yaml

from adaptwin.calibration.costs import load_calibration
from adaptwin.profiling import live_loop
from adaptwin.profiling.fake import FakeOpenAIServer, startup_lines

TINY_SHAPE = {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1, "vocab_size": 100}


@contextlib.contextmanager
def fake_factory(spec, modules, run_dir):
    """A fake server with the run's adapters; its startup lines are written where the launcher logs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "server_out.log").write_text("\n".join(startup_lines(spec.model, 50_000, 0.1, 1.0)) + "\n")
    with FakeOpenAIServer(model=spec.model, adapters=tuple(modules), ttft_s=0.01, itl_s=0.004) as srv:
        yield srv


def loop_dict(tmp_path) -> dict:
    return {
        "harness": {
            "model": "org/Tiny-Base", "family": "live", "subfamily": "loop", "work_dir": str(tmp_path / "work"),
            "server": {"max_num_seqs": 16, "max_num_batched_tokens": 2048},
            "adapters": {"ranks": [8, 16], "model_shape": TINY_SHAPE},
            "grid": {"max_loras": [2], "max_cpu_loras": [2], "max_lora_rank": [16]},
            "benchmark": {"input_len": 6, "output_len": 4, "token_ids": [10, 90]},
            "poller": {"interval_s": 0.05, "tail_s": 0.2},
        },
        "calibration": {"model_name": "fake-live", "out": str(tmp_path / "cal.json"), "batches": [1, 4], "crowd_repeats": 2,
                        "scan_requests": 6, "steady_requests": 4, "steady_rate": 40.0, "long_input_len": 24, "swap_requests": 4, "swap_rate_by_lora": 20.0},
        "validation": {"max_loras": [1, 2], "rate_sets": [[4.0, 2.0]], "total_time_s": 1.0, "repeats": 2,
                       "out": str(tmp_path / "metrics" / "live_twin_validation.json")},
    }


def test_loop_writes_a_loadable_calibration_and_the_metrics_contract(tmp_path):
    loop = live_loop.loop_config_from_dict(loop_dict(tmp_path), "loop.yaml")
    metrics = live_loop.run_loop(loop, factory=fake_factory)
    cal = load_calibration(tmp_path / "cal.json")
    assert cal.model == "fake-live" and cal.kv_capacity_tokens(2, 16) == 50_000 - 50_000 % 16
    assert cal.step["intercept"] > 0 and cal.load_time(8, 16) > 0
    assert len(cal.raw["fit_quality"]["crowd_ttft_ms"]) == 2  # the median of the repeated crowds
    # the fake exports counters but no timing histograms: every run records them, the client path is kept
    assert (tmp_path / "work" / "runs" / "live/loop/amax2/decode_1" / "engine_metrics.json").exists()
    runs = pl.read_parquet(tmp_path / "work" / "runs.parquet")
    steady = runs.filter(pl.col("run_id") == "live/loop/amax2/steady").row(0, named=True)
    assert steady["request_rate"] == 40.0  # steady_rate in all, on the one adapter (2 served)
    assert set(cal.raw["sources"]["step_costs"].values()) == {"client"}
    saved = json.loads((tmp_path / "metrics" / "live_twin_validation.json").read_text())
    assert set(live_loop.METRIC_KEYS) <= set(saved) and saved == json.loads(json.dumps(metrics))
    assert len(saved["runs"]) == 4 and {r["max_loras"] for r in saved["runs"]} == {1, 2}
    assert {r["live_itl_source"] for r in saved["runs"]} == {"client"}  # the fake exports no histograms
    assert 0 <= saved["starvation_agreement"] <= 1 and saved["repeat_spread"]["pairs"] == 2
    assert (tmp_path / "work" / "runs.parquet").exists()
    # the twin replays the arrivals as the client really sent them (sent.parquet), in time order
    run_dir = tmp_path / "work" / "runs" / "live/loop/amax2/rates0_rep0"
    sent = pl.read_parquet(run_dir / "sent.parquet").sort("sent_s")
    trace = pl.read_csv(run_dir / live_loop.TRACE_NAME)
    assert trace["arrived_at"].to_list() == pytest.approx(sent["sent_s"].to_list())
    assert (sent["sent_s"] >= sent["scheduled_s"] - 0.005).all()  # (asyncio may wake a clock tick early)
    assert all(r["send_lag_p90_ms"] >= 0 for r in saved["runs"])


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["validation"].update(max_loras=[5]), "validation.max_loras: 5 is not in 1..2"),
    (lambda d: d["calibration"].update(batches=[4]), "calibration.batches: [4]"),
    (lambda d: d.update(extra=1), "unknown key 'extra'"),
    (lambda d: d["harness"]["grid"].update(max_lora_rank=[8, 16]), "harness.grid.max_lora_rank"),
])
def test_bad_loop_config_names_the_field(tmp_path, edit, message):
    data = loop_dict(tmp_path)
    edit(data)
    with pytest.raises(live_loop.LoopConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        live_loop.loop_config_from_dict(data, "loop.yaml")


def test_main_exits_2_with_one_line_on_a_bad_file(tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump({"harness": {"model": "m"}}))
    assert live_loop.main([str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "section 'calibration' is missing" in err and str(path) in err


@pytest.mark.parametrize("text", ["harness: [unclosed", "- a list"])
def test_main_exits_2_on_a_file_that_is_not_a_mapping(tmp_path, capsys, text):
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    assert live_loop.main([str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err


# ---- the twin's vLLM release switch (server.vllm_version), as the live loop uses it ----------------------
def release_scenario(**server) -> dict:
    """A saturated server: 4 adapters far above capacity, every one resident."""
    return {"model": "llama-3.1-8b-instruct",
            "server": {"max_loras": 4, "max_lora_rank": 16, **server},
            "adapters": {"ranks": [8, 16, 8, 16], "rates": [40.0, 40.0, 40.0, 40.0]},
            "arrivals": {"kind": "poisson"}, "lengths": {"kind": "fixed", "input": 64, "output": 64},
            "duration_s": 20.0, "seed": 3}


def test_release_switch_defaults_to_the_twins_release_and_reads_the_live_runs_version():
    from adaptwin.twin.scenario import ScenarioError, parse_scenario

    assert parse_scenario(release_scenario(), check_model=False).server.vllm_version == "0.8.5"
    assert parse_scenario(release_scenario(), check_model=False).server.max_num_seqs == 256
    live = parse_scenario(release_scenario(vllm_version="0.32.0"), check_model=False).server  # as the harness records it
    assert (live.vllm_version, live.max_num_seqs) == ("0.32", 128)
    assert parse_scenario(release_scenario(vllm_version="0.32", max_num_seqs=64), check_model=False).server.max_num_seqs == 64
    for bad in ("0.9", "0.320", "latest"):
        with pytest.raises(ScenarioError, match=f"server.vllm_version: '{bad}' is not modelled"):
            parse_scenario(release_scenario(vllm_version=bad), check_model=False)


def test_releases_schedule_alike_with_explicit_arguments_and_differ_by_their_max_num_seqs_default():
    from pathlib import Path

    from adaptwin.calibration.costs import load_calibration
    from adaptwin.twin import simulate

    cal = load_calibration(Path(__file__).parent / "fixtures" / "calibration_llama_example.json")
    explicit = [simulate(release_scenario(max_num_seqs=96, vllm_version=v), cal) for v in ("0.8.5", "0.32")]
    keys = ("total_throughput", "itl_mean_ms", "ttft_mean_ms", "preemptions")
    assert [explicit[0][k] for k in keys] == [explicit[1][k] for k in keys]
    old, new = (simulate(release_scenario(vllm_version=v), cal) for v in ("0.8.5", "0.32"))
    assert new["mean_batch_size"] <= 128 < old["mean_batch_size"]


def test_loop_twin_scenario_carries_the_runs_vllm_version(tmp_path):
    loop = live_loop.loop_config_from_dict(loop_dict(tmp_path), "loop.yaml")
    row = {"adapter_rates": [1.0, 2.0], "adapter_rate_counts": [1, 1], "adapter_ranks": [8, 16], "max_loras": 1,
           "max_lora_rank": 16, "total_time_s": 5.0, "vllm_version": "0.32.0"}
    scenario = live_loop.twin_scenario(row, loop, "m", tmp_path / "trace.csv")
    assert scenario["server"]["vllm_version"] == "0.32.0"
    assert "vllm_version" not in live_loop.twin_scenario(row | {"vllm_version": None}, loop, "m",
                                                         tmp_path / "t.csv")["server"]


# ---- the shared CPU's contention (cpu_share) -----------------------------------------------------------
def test_cpu_share_counts_the_engine_main_threads_cpu_time_and_wait(monkeypatch):
    import subprocess
    import sys
    import time

    from adaptwin.profiling import cpu_share

    spin = "import time\ntime.sleep(0.3)\nt = time.time()\nwhile time.time() - t < 0.6: pass\ntime.sleep(60)\n"
    child = subprocess.Popen([sys.executable, "-c", spin], start_new_session=True)
    time.sleep(0.15)  # until the child has exec'd: before, its name is the forking test runner's ("pytest")
    monkeypatch.setattr(cpu_share, "WORKER_NAME", (cpu_share.PROC / str(child.pid) / "comm").read_text().strip())
    try:
        with cpu_share.measured(child.pid) as share:
            time.sleep(1.5)  # the child spins inside the block and is still alive at its end
    finally:
        child.kill()
        child.wait()
    # runnable for the 0.6 s it spins (on a core or waiting for one: this machine is shared), not while it sleeps
    assert share.on_cpu_s > 0.05 and 0.4 < share.on_cpu_s + share.waiting_s < 1.5
    with cpu_share.measured(None) as nothing:
        pass
    assert (nothing.on_cpu_s, nothing.waiting_s) == (0.0, 0.0)


def fixture_calibration_dict() -> dict:
    from pathlib import Path

    return json.loads((Path(__file__).parent / "fixtures" / "calibration_llama_example.json").read_text())


def test_a_slowed_engine_has_its_cpu_work_stretched_in_the_twin():
    from adaptwin.profiling import cpu_share, replay

    cal = fixture_calibration_dict()
    slow = cpu_share.stretched(cal, 2.0)
    assert slow["step"]["params"]["intercept"] == 2 * cal["step"]["params"]["intercept"]
    rank_times = [v for ranks in slow["loading"]["params"].values() for v in ranks.values()]
    assert rank_times == [2 * v for ranks in cal["loading"]["params"].values() for v in ranks.values()]
    assert cpu_share.CpuShare(10.0, 5.0).slowdown == 1.5 and cpu_share.CpuShare().slowdown == 1.0
    scenario = release_scenario(max_num_seqs=96) | {"adapters": {"ranks": [8, 16], "rates": [1.0, 1.0]}}
    scenario["server"]["max_loras"] = 2
    idle, slowed = (replay.simulate_replay(scenario, cal, f) for f in (1.0, 2.0))
    assert slowed["itl_mean_ms"] > 1.8 * idle["itl_mean_ms"] and slowed["cpu_slowdown"] == 2.0


def test_replay_sends_each_request_to_the_adapter_the_live_request_asked_for(tmp_path):
    from adaptwin.profiling import replay

    rows = [(0.05 * i, 64, 16, 1) for i in range(200)]  # every request to adapter 1, the rare one by rate
    exact = replay.write_trace(tmp_path / "exact.csv", rows)
    plain = tmp_path / "plain.csv"
    plain.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" + "".join(f"{t},{p},{o}\n" for t, p, o, _ in rows))
    assert list(replay.trace_adapters(exact)) == [1] * 200 and replay.trace_adapters(plain) is None
    results = {}
    for name, path in (("exact", exact), ("plain", plain)):
        scenario = release_scenario(max_num_seqs=96) | {"adapters": {"ranks": [8, 16], "rates": [9.0, 1.0]},
                                                         "arrivals": {"kind": "trace", "path": str(path)},
                                                         "lengths": {"kind": "trace", "path": str(path)}}
        scenario["server"]["max_loras"] = 1
        results[name] = replay.simulate_replay(scenario, fixture_calibration_dict())
    assert results["exact"]["adapter_loads"] <= 1 < results["plain"]["adapter_loads"]
    assert results["exact"]["finished_requests"] == 200


def test_profiling_divides_the_runs_slowdown_out_of_each_latency():
    row = {"tpot_median_ms": 12.0, "ttft_median_ms": None, "run_id": "r"}
    assert live_loop.uncontended(row, 1.5) == {"tpot_median_ms": 8.0, "ttft_median_ms": None, "run_id": "r"}


def test_scan_cost_is_the_time_per_token_growth_with_the_queue_the_scheduler_walks():
    import polars as pl

    tpot = {"a": 0.030, "b": 0.020, "c": 0.010}  # a ran first (b's and c's 96 requests queued), c last (none)
    rows = [{"model": m, "success": True, "output_tokens": 33, "ttft_s": start + 0.01 * i,
             "latency_s": start + 0.01 * i + 32 * tpot[m]}
            for m, start in (("b", 2.0), ("a", 0.5), ("c", 4.0)) for i in range(48)]
    cost = live_loop.scan_cost(pl.DataFrame(rows))
    assert cost == pytest.approx(0.020 / 96)
    assert live_loop.scan_cost(pl.DataFrame(rows), slowdown=2.0) == pytest.approx(0.010 / 96)
    assert live_loop.scan_cost(pl.DataFrame([r for r in rows if r["model"] == "a"])) is None


def test_scheduler_scan_prefers_the_in_process_timing_and_keeps_the_client_slope_beside_it(tmp_path):
    import polars as pl

    tpot = {"a": 0.030, "b": 0.020, "c": 0.010}
    rows = [{"model": m, "success": True, "output_tokens": 33, "ttft_s": start + 0.01 * i,
             "latency_s": start + 0.01 * i + 32 * tpot[m]}
            for m, start in (("a", 0.5), ("b", 2.0), ("c", 4.0)) for i in range(48)]
    scan_dir = tmp_path / "runs" / live_loop.run_name(1, "scan")
    scan_dir.mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(scan_dir / "requests.parquet")
    cost, source = live_loop.scheduler_scan(tmp_path, {})
    assert cost == pytest.approx(0.020 / 96) and source["path"].startswith("client")
    probe = {"seconds_per_waiting": 3e-6, "times_s": {"0": 0.001, "1000": 0.004}}
    (tmp_path / live_loop.SCAN_PROBE_NAME).write_text(json.dumps(probe))
    cost, source = live_loop.scheduler_scan(tmp_path, {})
    assert cost == 3e-6 and "in-process" in source["path"]
    assert source["client_slope_s"] == pytest.approx(0.020 / 96)
    assert live_loop.scheduler_scan(tmp_path / "empty", {}) == (None, None)


def test_live_itl_is_the_engines_decode_period_with_the_clients_beside_it():
    row = {"itl_mean_ms": 2.3}  # the client's: chunks of coalesced tokens read as gaps of ~0
    engine = live_loop.engine_times({
        live_loop.PREFILL: {"count": 4, "sum": 0.04},
        live_loop.DECODE: {"count": 4, "sum": 4 * 31 * 0.005},
        live_loop.GENERATED: {"count": 4, "sum": 4 * 32},
    })
    out = live_loop.live_itl(row, engine)
    assert out["live_itl_mean_ms"] == pytest.approx(5.0) and out["live_client_itl_mean_ms"] == 2.3
    assert live_loop.live_itl(row, None) == {"live_itl_source": "client", "live_client_itl_mean_ms": 2.3}
