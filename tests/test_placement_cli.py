"""`adaptwin place`: the output contract (placement.json keys, routing.csv, serve scripts) and bad workloads,
through a subprocess and in-process. The surrogate is a real CatBoost set trained in seconds on rows from the
analytic stand-in (tests/test_placement_fakes.py), so the command runs exactly as in production."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_placement_fakes import FIXTURE, FakePredictor, fake_features, fake_workload

from adaptwin.cli import main
from adaptwin.placement.workloads import read_workload

MODEL = "llama-3.1-8b-instruct"
ROOT = Path(__file__).resolve().parents[1]
GPU_KEYS = {"gpu", "adapters", "max_loras", "max_cpu_loras", "max_lora_rank", "predicted"}
TWIN_KEYS = {"throughput_tok_s", "offered_tok_s", "throughput_over_offered", "ttft_mean_ms", "itl_mean_ms", "starved",
             "memory_error", "error", "passed", "seed", "window_s"}


def fake_dataset(rows: int = 400, seed: int = 0) -> pl.DataFrame:
    """A sweep-shaped dataset whose targets come from the analytic GPU."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(rows):
        served = int(rng.integers(1, 120))
        ranks = rng.choice([8, 16, 32], served)
        rates = rng.uniform(0.0, 2.0 * rng.uniform(0.01, 0.3), served)
        slots = int(rng.choice([a for a in (8, 16, 32, 64, 96) if a <= served] or [served]))
        features = pl.DataFrame([fake_features(ranks, rates, slots)])
        out = FakePredictor().predict(features).row(0, named=True)
        records.append({
            "scenario_id": f"s{i:04d}", "error": None, "memory_error": False,
            "group_counts": [1] * served, "group_ranks": ranks.tolist(), "group_rates": rates.tolist(),
            "max_loras": slots, "total_throughput": out["total_throughput"], "itl_mean_ms": out["itl_mean_ms"],
            "ttft_mean_ms": out["ttft_mean_ms"], "starved": bool(out["starved"]),
            "ideal_throughput": float(rates.sum() * 400.0), "finished_requests": 100,
        })
    return pl.DataFrame(records, schema_overrides={"error": pl.Utf8})


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    from adaptwin.surrogate.train import train_surrogates

    out = tmp_path_factory.mktemp("models")
    train_surrogates(fake_dataset(), MODEL, out / MODEL, n_search=1, max_iterations=60, threads=1)
    return out


@pytest.fixture
def workload_csv(tmp_path) -> Path:
    path = tmp_path / "workload.csv"
    fake_workload(60, mean_rate=0.15).write_csv(path)
    return path


def place_args(workload: Path, out: Path, models: Path, method: str = "greedy", fast: bool = True) -> list[str]:
    return ["place", str(workload), "--model", MODEL, "--method", method, "--out", str(out),
            "--models-dir", str(models), "--calibration", str(FIXTURE), *(["--fast"] if fast else []),
            "--workers", "1"]


def check_outputs(out: Path, workload: Path, method: str, verified: bool = False) -> dict:
    doc = json.loads((out / "placement.json").read_text())
    assert set(doc) == {"model", "method", "gpus", "lower_bound_gpus", "verification"}
    assert doc["model"] == MODEL and doc["method"] == method and doc["lower_bound_gpus"] >= 1
    assert doc["verification"]["verified"] is verified
    ids = pl.read_csv(workload)["adapter_id"].to_list()
    placed = [a for g in doc["gpus"] for a in g["adapters"]]
    assert sorted(set(placed)) == sorted(ids)
    for i, gpu in enumerate(doc["gpus"]):
        assert set(gpu) == (GPU_KEYS | {"twin"} if verified else GPU_KEYS) and gpu["gpu"] == i
        if verified:
            assert set(gpu["twin"]) == TWIN_KEYS and gpu["twin"]["window_s"] > 0 and gpu["twin"]["passed"]
        assert set(gpu["predicted"]) == {"total_throughput", "itl_mean_ms", "starvation_probability"}
        assert gpu["max_cpu_loras"] == len(gpu["adapters"]) and 1 <= gpu["max_loras"] <= gpu["max_cpu_loras"]
        script = (out / f"serve_gpu{i}.sh").read_text()
        assert '"${VLLM_MODEL:-meta-llama/Llama-3.1-8B-Instruct}"' in script and "--enable-lora" in script
        assert "--no-enable-prefix-caching" in script and "--max-num-batched-tokens 2048" in script
        assert f"--max-loras {gpu['max_loras']} " in script and f"--max-cpu-loras {gpu['max_cpu_loras']} " in script
        assert f"--max-lora-rank {gpu['max_lora_rank']} " in script
        assert all(f'{a}="${{ADAPTER_DIR:-adapters}}"/{a}' in script for a in gpu["adapters"])
    routing = pl.read_csv(out / "routing.csv")
    assert routing.columns == ["adapter_id", "gpu", "endpoint", "share"]
    expected = sorted((a, g["gpu"]) for g in doc["gpus"] for a in g["adapters"])
    assert sorted(routing.select("adapter_id", "gpu").iter_rows()) == expected
    assert routing["share"].is_between(0, 1, closed="right").all()
    assert routing.group_by("adapter_id").agg(pl.col("share").sum())["share"].to_list() == pytest.approx([1.0] * len(set(ids)))
    assert all(e == f"http://127.0.0.1:{8000 + g}/v1" for e, g in routing.select("endpoint", "gpu").iter_rows())
    assert not list(out.glob(f"serve_gpu{len(doc['gpus'])}.sh"))
    return doc


def test_place_subprocess_writes_the_contract(models_dir, workload_csv, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "adaptwin", *place_args(workload_csv, out, models_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "UNVERIFIED" in proc.stdout and "GPUs for 60 adapters" in proc.stdout
    check_outputs(out, workload_csv, "greedy")
    script = out / "serve_gpu0.sh"
    assert script.stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0  # valid shell


@pytest.mark.parametrize("method", ["greedy-fast", "greedy-latency", "loraserve", "dlora", "ffd", "round-robin"])
def test_place_in_process_every_method(models_dir, workload_csv, tmp_path, method):
    out = tmp_path / method
    assert main(place_args(workload_csv, out, models_dir, method)) == 0
    check_outputs(out, workload_csv, method)


def test_default_placement_is_twin_verified_and_records_each_verdict(models_dir, workload_csv, tmp_path, capsys):
    out = tmp_path / "verified"
    assert main(place_args(workload_csv, out, models_dir, fast=False)) == 0
    printed = capsys.readouterr().out
    doc = check_outputs(out, workload_csv, "greedy", verified=True)
    passed = doc["verification"]["gpus_passed"]
    assert f"twin-verified: {passed} of {len(doc['gpus'])} GPUs pass" in printed and " s simulated per GPU" in printed
    from adaptwin.calibration.costs import load_calibration
    from adaptwin.placement.verified import from_document, recheck

    placement = from_document(doc, read_workload(workload_csv))  # the recorded verdicts are the twin's own
    assert recheck(placement, load_calibration(FIXTURE), seed_offset=1) == [g["twin"] for g in doc["gpus"]]
    again = tmp_path / "repaired"  # --repair is kept as a no-op alias: same answer
    assert main([*place_args(workload_csv, again, models_dir, fast=False), "--repair"]) == 0
    assert json.loads((again / "placement.json").read_text()) == doc


BAD = {
    "missing column": ("adapter_id,rank\na,8\n", "missing column(s) rate"),
    "duplicate id": ("adapter_id,rank,rate\na,8,0.1\nb,8,0.1\na,16,0.2\n", "row 4: duplicate adapter_id 'a'"),
    "rank too large": ("adapter_id,rank,rate\na,8,0.1\nb,64,0.1\n", "row 3: field rank: 64 is beyond the calibrated ranks"),
    "rank vLLM refuses": ("adapter_id,rank,rate\na,8,0.1\nb,24,0.1\n", "row 3: field rank: 24 is not a LoRA rank vLLM"),
    "negative rate": ("adapter_id,rank,rate\na,8,0.1\nb,8,-0.5\n", "row 3: field rate: must be finite and >= 0"),
    "non-numeric rate": ("adapter_id,rank,rate\na,8,fast\n", "row 2: field rate: not a number: 'fast'"),
    "non-numeric rank": ("adapter_id,rank,rate\na,eight,0.1\n", "row 2: field rank: not a number"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_workload_exits_non_zero_naming_the_row_subprocess(case, tmp_path):
    text, message = BAD[case]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "adaptwin", "place", str(path), "--model", MODEL,
                           "--out", str(tmp_path / "out"), "--calibration", str(FIXTURE)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr and str(path) in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_workload_in_process(case, tmp_path, capsys):
    text, message = BAD[case]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    args = ["place", str(path), "--model", MODEL, "--out", str(tmp_path / "o"), "--calibration", str(FIXTURE)]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_read_workload_types_and_missing_file(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("rate,adapter_id,rank\n0.25,x,16\n1e-3,y,8\n")
    frame = read_workload(path, max_rank=32)
    assert frame.schema == {"adapter_id": pl.Utf8, "rank": pl.Int64, "rate": pl.Float64}
    assert frame.rows() == [("x", 16, 0.25), ("y", 8, 0.001)]
    assert main(["place", str(tmp_path / "nope.csv"), "--model", MODEL, "--out", str(tmp_path / "o"),
                 "--calibration", str(FIXTURE)]) == 2
