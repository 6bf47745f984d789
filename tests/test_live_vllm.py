"""The live tier: a real vLLM server (the CPU build of a current release, ``make install-vllm``) serving a tiny
random Llama model with zero-weight adapters, driven by the profiling harness end to end.

Why a real server: the fake server only answers what its author believed vLLM does. Here the harness meets
vLLM's own scheduler, LoRA slots, swapping and Prometheus counters: requests and tokens the client counts
must equal what the server counted, at most A_max adapters may run at once while more are served, and the
tables must have the replayed corpus's schema. One server is shared by the runs (a start costs about a
minute of the single core it computes on); a configuration vLLM refuses is stopped before any server starts.

The environment and the model are built here when missing (``make install-vllm``; the model into
``.cache/``), so a fresh clone runs this tier under ``make test`` without anything installed by hand.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
import yaml

from adaptwin.measurements import schema
from adaptwin.placement.core import Gpu, Placement
from adaptwin.placement.export import write_placement
from adaptwin.profiling import adapters as adapters_mod
from adaptwin.profiling import client, live_loop, live_place, prometheus, runner, server
from adaptwin.profiling.cli import run_from_config
from adaptwin.profiling.config import config_from_dict, expand
from adaptwin.profiling.writers import kv_capacity_row

pytestmark = [pytest.mark.live, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
VLLM_ENV = ROOT / ".venv-vllm"
MODEL_DIR = ROOT / ".cache" / "tiny-llama-seed0"
A_MAX, SERVED = 1, 3
KV_SPACE_GIB = "2"
KV_BYTES_PER_TOKEN = 2 * 2 * 1 * 64 * 2  # K and V x 2 layers x 1 KV head x head size 64 x bf16


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The vLLM environment's interpreter, installed by the Makefile target when missing."""
    if not (VLLM_ENV / ".installed").exists():
        subprocess.run(["make", "-C", str(ROOT), "install-vllm"], check=True, timeout=1800)
    return str(VLLM_ENV / "bin" / "python")


@pytest.fixture(scope="session")
def tiny_model(vllm_python: str) -> str:
    """The tiny model folder (built once from seed 0 with the vLLM environment's transformers)."""
    builder = ROOT / "lib" / "adaptwin" / "profiling" / "tiny_model.py"
    subprocess.run([vllm_python, str(builder), str(MODEL_DIR), "--seed", "0"], check=True, timeout=600)
    return str(MODEL_DIR)


def live_config(model: str, python: str, work_dir: Path, benchmark: dict, grid: dict | None = None) -> dict:
    """A profiling config for the tiny model on the CPU build: A_max 1 of 3 served adapters, ranks 8 and 16."""
    return {
        "model": model,
        "family": "live",
        "seed": 3,
        "work_dir": str(work_dir),
        "server": {
            "python": python,
            "port": _free_port(),
            "max_num_seqs": 32,
            "env": {"VLLM_CPU_KVCACHE_SPACE": KV_SPACE_GIB},
            "ready_timeout_s": 600,
        },
        "adapters": {"ranks": [8, 16]},
        "grid": grid or {"max_loras": [A_MAX], "max_cpu_loras": [SERVED], "max_lora_rank": [16]},
        "benchmark": {"input_len": 24, "output_len": 16, "token_ids": [10, 2000], **benchmark},
        "poller": {"interval_s": 0.1, "tail_s": 1.0},  # frequent polls: short swaps are seen
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(vllm_python: str, tiny_model: str, tmp_path_factory):
    """One real vLLM server for the module's runs, started by the harness's own launcher and stopped after."""
    work = tmp_path_factory.mktemp("live")
    cfg = config_from_dict(live_config(tiny_model, vllm_python, work, {"mode": "fixed_count", "num_prompts": 1}))
    version = server.vllm_version(vllm_python)
    spec = replace(expand(cfg)[0], vllm_version=version)
    shape = adapters_mod.resolve_model_shape(tiny_model)
    # '=' and ',' in the adapters' paths: the launcher must pass them in vLLM's JSON form
    ranks = adapters_mod.ensure_adapters(work / "adapters=a,b", [8, 16], tiny_model, shape)
    modules = runner.lora_modules(spec, ranks)
    launched = runner.vllm_server_factory(spec, modules, work / "server")
    with launched as srv:
        yield {"server": srv, "spec": spec, "work": work, "version": version, "modules": modules}
    assert not server.group_alive(srv.process)  # the engine core child is gone too
    row = {"run_id": spec.run_id, "model": "tiny", "max_loras": A_MAX, "max_lora_rank": 16, "status": "ok"}
    kv = kv_capacity_row(row, server.read_logs(work / "server"))
    assert kv["kv_tokens"] == int(KV_SPACE_GIB) * 2**30 // KV_BYTES_PER_TOKEN  # the CPU backend's line, read


def run_on(live_server: dict, benchmark: dict, name: str) -> runner.RunOutcome:
    """One harness run (``runner.run_one``) on the shared server; the spec keeps the server's arguments."""
    spec = live_server["spec"]
    cfg = config_from_dict(
        live_config(spec.model, spec.server.python, live_server["work"], benchmark)
    )
    run_spec = replace(expand(cfg)[0], server=spec.server, vllm_version=live_server["version"], run_id=name)

    def shared(_spec, _modules, _run_dir):
        return contextlib.nullcontext(live_server["server"])

    return runner.run_one(run_spec, cfg, live_server["work"], shared)


def server_series(live_server: dict, name: str) -> pl.DataFrame:
    return pl.read_parquet(live_server["work"] / "runs" / name / "server_series.parquet")


def check_conservation(row: dict, series: pl.DataFrame) -> None:
    """Requests and tokens the client counted equal the server's counter increments over the run."""
    first, last = series.row(0, named=True), series.row(-1, named=True)
    assert last["finished_total"] - first["finished_total"] == row["successful_requests"]
    assert last["prompt_tokens_total"] - first["prompt_tokens_total"] == row["total_input_tokens"]
    assert last["generation_tokens_total"] - first["generation_tokens_total"] == row["total_output_tokens"]


def check_bounded_conservation(row: dict, series: pl.DataFrame, run_dir: Path) -> None:
    """By-time: requests cut at the window end are not counted by the client; the server may have finished,
    prefilled or partly decoded them, so its increments lie between the client's counts and those counts
    plus what the cancelled requests could add."""
    (result,) = run_dir.glob("openai-*.json")
    cut = json.loads(result.read_text())["cancelled_at_window_end"]
    first, last = series.row(0, named=True), series.row(-1, named=True)
    bounds = {
        "finished_total": (row["successful_requests"], cut),
        "prompt_tokens_total": (row["total_input_tokens"], cut * row["input_len"]),
        "generation_tokens_total": (row["total_output_tokens"], cut * row["output_len"]),
    }
    for column, (counted, extra) in bounds.items():
        assert counted <= last[column] - first[column] <= counted + extra, column


def check_engine_metrics(run_dir: Path, row: dict) -> None:
    """The engine's histograms around the run count its requests and tokens (warm-up left out), and their
    times fit inside the client's: scheduled-to-first-token within arrival-to-first-token."""
    from adaptwin.profiling.live_loop import engine_times

    delta = json.loads((run_dir / runner.ENGINE_METRICS_NAME).read_text())
    assert delta["vllm:request_prefill_time_seconds"]["count"] == row["successful_requests"]
    assert delta["vllm:request_generation_tokens"]["sum"] == row["total_output_tokens"]
    assert delta["vllm:request_prompt_tokens"]["sum"] == row["total_input_tokens"]
    times = engine_times(delta)
    assert times is not None and 0 < times["prefill_s"] < row["ttft_mean_ms"] / 1000
    assert 0 < times["decode_step_s"] and times["steps"] >= row["total_output_tokens"] / row["successful_requests"]


def check_adapter_slots(series: pl.DataFrame, served: list[str]) -> set[str]:
    """At most A_max adapters run in any sample; returns every adapter seen running."""
    running = [set(r) for r in series["running_adapters"].to_list() if r is not None]
    assert running, "the server exported no vllm:lora_requests_info"
    assert max(len(r) for r in running) <= A_MAX
    assert set(series["max_lora"].drop_nulls().to_list()) == {A_MAX}
    seen = set().union(*running)
    assert seen <= set(served)
    return seen


def check_tables(outcomes: list[runner.RunOutcome], out: Path) -> None:
    """The rows written as the profile command writes them have the replayed corpus's schema."""
    from adaptwin.profiling.writers import to_frame, write_tables

    tables = {
        "runs": to_frame("runs", [o.run for o in outcomes]),
        "timeseries": to_frame("timeseries", [r for o in outcomes for r in o.timeseries]),
        "kv_capacity": to_frame("kv_capacity", [o.kv_capacity for o in outcomes]),
    }
    for name, path in write_tables(out, tables).items():
        frame = pl.read_parquet(path)
        assert frame.schema == schema.polars_schema(name) and frame.height > 0


def test_fixed_count_and_by_time_runs_conserve_requests_and_tokens_and_swap_adapters(live_server, tmp_path):
    served = list(live_server["modules"])
    fixed = run_on(live_server, {"mode": "fixed_count", "num_prompts": 12}, "live/fixed")
    row = fixed.run
    assert row["status"] == "ok" and row["successful_requests"] == 12, row["reason"]
    assert row["total_output_tokens"] == 12 * 16 and row["total_input_tokens"] == 12 * 24
    assert row["vllm_version"] == live_server["version"] and row["max_loras"] == A_MAX
    series = server_series(live_server, "live/fixed")
    check_conservation(row, series)
    check_engine_metrics(live_server["work"] / "runs" / "live/fixed", row)
    seen = check_adapter_slots(series, served)

    timed = run_on(
        live_server, {"mode": "by_time", "total_time_s": 8.0, "adapter_rates": [2.0, 1.0, 0.5]}, "live/timed"
    )
    trow = timed.run
    assert trow["status"] == "ok" and trow["successful_requests"] > 0, trow["reason"]
    assert 8.0 <= trow["duration_s"] < 8.0 + 5.0
    assert trow["adapter_rates"] == [0.5, 1.0, 2.0] and trow["vllm_version"] == live_server["version"]
    tseries = server_series(live_server, "live/timed")
    check_bounded_conservation(trow, tseries, live_server["work"] / "runs" / "live/timed")
    seen |= check_adapter_slots(tseries, served)
    assert len(seen) > A_MAX  # more adapters ran than slots exist: the server swapped them
    check_tables([fixed, timed], tmp_path / "tables")


def test_sharegpt_text_prompts_end_at_eos_or_max_tokens_and_are_counted(live_server, tmp_path):
    conversations = [
        {"conversations": [{"from": "human", "value": f"tell story {i} about {w}"}, {"from": "gpt", "value": "ok"}]}
        for i, w in enumerate(["rivers", "stars", "bread", "maps"])
    ]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(conversations))
    bench = {"mode": "fixed_count", "num_prompts": 6, "dataset": "sharegpt", "dataset_path": str(path)}
    row = run_on(live_server, bench, "live/sharegpt").run
    assert row["status"] == "ok" and row["successful_requests"] == 6 and row["dataset"] == "sharegpt"
    assert 0 < row["total_output_tokens"] <= 6 * 16  # EOS may end a request early; max_tokens caps it
    check_conservation(row, server_series(live_server, "live/sharegpt"))


def test_lora_label_series_outlive_the_requests_that_made_them(live_server):
    """vLLM keeps one ``vllm:lora_requests_info`` series per (waiting, running) adapter label it ever set and
    removes none (why /metrics renders grow over a run: `adaptwin.twin.frontend`): once the server is idle,
    series naming running adapters remain, each label pair once."""
    row = run_on(live_server, {"mode": "fixed_count", "num_prompts": 9}, "live/labels").run
    assert row["status"] == "ok" and row["successful_requests"] == 9, row["reason"]
    metrics = prometheus.parse(prometheus.fetch_text(live_server["server"].base_url + "/metrics", 30.0))
    assert metrics.total("vllm:num_requests_running") == 0
    labels = [(s.labels["waiting_lora_adapters"], s.labels["running_lora_adapters"])
              for s in metrics.series("vllm:lora_requests_info")]
    assert len(labels) == len(set(labels)) >= 2
    stale = [running for _, running in labels if running]
    assert stale and all(set(running.split(",")) <= set(live_server["modules"]) for running in stale)


def test_a_rank_vllm_refuses_stops_before_any_server_starts(vllm_python, tiny_model, tmp_path, capsys):
    cfg = live_config(tiny_model, vllm_python, tmp_path / "work", {"mode": "fixed_count", "num_prompts": 2})
    cfg["grid"]["max_lora_rank"] = [24]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"max_lora_rank 24 is not accepted by vLLM 0\.\d+"):
        run_from_config(path, tmp_path / "out")
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()
    done = subprocess.run(
        [sys.executable, "-m", "adaptwin", "profile", str(path), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert done.returncode == 2 and "bad.yaml" in done.stderr and "max_lora_rank 24" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def tiny_placement() -> Placement:
    """Two GPUs of four adapters; adapter ``a0`` is split 0.75 / 0.25 between them; ``a=1`` needs vLLM's JSON
    form of ``--lora-modules``."""
    workload = pl.DataFrame(
        {"adapter_id": ["a0", "a=1", "a2", "a3"], "rank": [8, 16, 8, 16], "rate": [2.0, 1.0, 1.0, 1.0]}
    )
    predicted = {"total_throughput": 100.0, "itl_mean_ms": 20.0, "starvation_probability": 0.0}
    gpus = [
        Gpu(members=(0, 1, 2), max_loras=1, max_lora_rank=16, predicted=predicted, shares=(0.75, 1.0, 1.0)),
        Gpu(members=(0, 3), max_loras=1, max_lora_rank=16, predicted=predicted, shares=(0.25, 1.0)),
    ]
    return Placement("tiny", "greedy", workload, gpus, lower_bound_gpus=2)


def test_exported_serve_script_serves_the_traffic_routing_csv_sends(vllm_python, tiny_model, tmp_path):
    """GPU 0's exported script, started as a cluster would (CPU build, tiny model, an inherited device list),
    serves every adapter routing.csv sends it, in proportion to the shares."""
    placement = tiny_placement()
    port = _free_port()
    write_placement(placement, tmp_path / "deploy", base_port=port)
    routing = pl.read_csv(tmp_path / "deploy" / "routing.csv")
    mine = routing.filter(pl.col("gpu") == 0)
    assert mine["endpoint"].unique().to_list() == [f"http://127.0.0.1:{port}/v1"]
    adapters = live_place.adapter_dir(placement.workload, tiny_model, tmp_path / "adapters")
    env = live_place.script_env(vllm_python, tiny_model, adapters,
                                {"CUDA_VISIBLE_DEVICES": "0,1", "VLLM_CPU_KVCACHE_SPACE": KV_SPACE_GIB})
    script = tmp_path / "deploy" / "serve_gpu0.sh"
    base_url = mine["endpoint"][0].removesuffix("/v1")
    rates = dict(placement.workload.select("adapter_id", "rate").iter_rows())
    requests = []  # 4 s of each adapter's rate times its share on this GPU: a0 6, a=1 4, a2 4
    for adapter_id, share in mine.select("adapter_id", "share").iter_rows():
        requests += [adapter_id] * round(4 * rates[adapter_id] * share)
    schedule = [
        client.Request(i, 0.05 * i, name, list(range(10, 34)), 24, 8) for i, name in enumerate(requests)
    ]
    with live_place.exported_server(script, base_url, tmp_path / "logs", env) as launched:
        assert set(server.list_models(base_url)) >= set(mine["adapter_id"])
        result = client.run_benchmark(base_url, schedule, None, timeout_s=300)
    assert not server.group_alive(launched.process)
    assert all(o.success and o.output_tokens == 8 for o in result.outputs), [o.error for o in result.outputs]
    served = pl.DataFrame({"adapter_id": [o.model for o in result.outputs]})["adapter_id"].value_counts()
    counts = dict(served.iter_rows())
    assert counts == {"a0": 6, "a=1": 4, "a2": 4}
    command = (tmp_path / "logs" / "server_command.txt").read_text()
    assert "serve_gpu0.sh" in command


#: the tiny model on a shared CPU, roughly as the live loop calibrates it (a test must not wait for the loop)
TINY_CALIBRATION = {
    "schema_version": 1, "model": "tiny-llama-test", "max_model_len": 1024, "block_size": 16,
    "step": {"form": "linear", "params": {"intercept": 0.006, "decode_seqs": 0.0006, "prefill_tokens": 5e-5,
                                          "prefill_seqs": 0.002}},
    "lora": {"form": "piecewise_linear", "params": {"x": [1, 3], "y": [1.0, 1.1]}},
    "loading": {"form": "table", "params": {"16": {"8": 5.0, "16": 5.0}}},
    "kv_capacity": {"form": "linear_slots", "params": {"base_tokens": 4_194_304, "per_slot_rank_tokens": 0}},
    "scheduler": {"form": "linear", "params": {"intercept": 0.0}},
}


def test_placed_workload_is_served_from_its_exported_script_by_routing_shares(vllm_python, tiny_model, tmp_path):
    """The live loop's last step on one GPU: a workload too heavy for one GPU is placed by the library (twin
    as surrogate, twin-verified), GPU 0's exported script is started and sent its routing.csv traffic, and
    the record compares the live throughput with the twin's replay of the same requests."""
    from adaptwin.calibration.costs import from_dict

    calibration = from_dict(TINY_CALIBRATION, "test calibration")
    plan = {"adapters": [["a0", 8, 2.0], ["a1", 16, 1.5], ["a2", 8, 1.0], ["a3", 16, 1.0], ["a4", 8, 0.5]],
            "twin_window_s": 60, "predictor_window_s": 30, "serve_time_s": 8, "base_port": _free_port(),
            "out_dir": str(tmp_path / "placement")}
    block = live_place.place_and_serve(plan, calibration, vllm_python, tiny_model, 1024, (10, 2000),
                                       {"VLLM_CPU_KVCACHE_SPACE": KV_SPACE_GIB}, gpus=[0])
    assert block["num_gpus"] >= 2 and block["verified"]
    (record,) = block["gpus"]
    routing = pl.read_csv(tmp_path / "placement" / "deploy" / "routing.csv").filter(pl.col("gpu") == 0)
    assert record["adapters"] == routing["adapter_id"].to_list()
    assert set(record["done_per_adapter"]) <= set(routing["adapter_id"].to_list())
    assert record["requests_done"] > 0 and record["live_tok_s"] > 0 and record["twin_tok_s"] > 0
    assert record["offered_tok_s"] > 0 and isinstance(record["live_starved"], bool)
    assert record["live_starved"] == (record["live_tok_s"] < 0.9 * record["offered_tok_s"])
    assert record["verification"]["passed"] in (True, False)
    command = (tmp_path / "placement" / "deploy" / "live" / "gpu0" / "server" / "server_command.txt").read_text()
    assert "serve_gpu0.sh" in command


def test_scan_probe_times_vllms_scheduler_walking_past_the_waiting_queue(vllm_python, tiny_model):
    """vLLM's own scheduler, one slot taken: each ``schedule()`` looks at every waiting request of another
    adapter, so its time grows linearly with them; the slope is a few microseconds of Python per request."""
    probe = Path(live_loop.SCAN_PROBE)
    done = subprocess.run([vllm_python, str(probe), tiny_model, "--waiting", "0", "400", "1600", "--repeats", "3"],
                          capture_output=True, text=True, timeout=600, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    times = {int(k): v for k, v in out["times_s"].items()}
    assert times[0] < times[400] < times[1600]
    # the slope against the two-point growth over the whole range (an independent calculation)
    assert out["seconds_per_waiting"] == pytest.approx((times[1600] - times[0]) / 1600, rel=0.5)
    assert 1e-7 < out["seconds_per_waiting"] < 5e-5
    assert out["vllm_version"] == server.vllm_version(vllm_python)


def test_scan_probe_refuses_a_single_waiting_count(vllm_python, tiny_model):
    probe = Path(live_loop.SCAN_PROBE)
    done = subprocess.run([vllm_python, str(probe), tiny_model, "--waiting", "5"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2 and "--waiting needs at least two distinct counts" in done.stderr
