"""`adaptwin simulate` and the scenario contract: valid files give one JSON object, bad ones one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from twin_helpers import fixture_calibration, scenario

from adaptwin import paths
from adaptwin.twin import ScenarioError, parse_scenario

CONTRACT_KEYS = {
    "total_throughput", "input_throughput", "output_throughput", "request_throughput", "arrived_requests",
    "finished_requests", "ttft_mean_ms", "ttft_median_ms", "ttft_p99_ms", "itl_mean_ms", "itl_median_ms",
    "itl_p99_ms", "mean_batch_size", "preemptions", "adapter_loads", "ideal_throughput", "starved",
    "memory_error", "wall_time_s",
}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "adaptwin", "simulate", *map(str, args)], capture_output=True,
                          text=True, cwd=paths.repo_root(), timeout=120)


@pytest.fixture(scope="module")
def cal_path(tmp_path_factory):
    return fixture_calibration(tmp_path_factory.mktemp("cal"))[0]


def test_cli_prints_one_json_object(tmp_path, cal_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario(duration=120.0)))
    pretty = run_cli(path, "--calibration", cal_path)
    assert pretty.returncode == 0, pretty.stderr
    out = json.loads(pretty.stdout)
    assert CONTRACT_KEYS <= set(out)
    assert out["finished_requests"] > 0 and out["memory_error"] is False
    compact = run_cli(path, "--calibration", cal_path, "--json")
    assert compact.returncode == 0 and compact.stdout.count("\n") == 1
    again = json.loads(compact.stdout)
    assert {k: v for k, v in again.items() if k != "wall_time_s"} == {
        k: v for k, v in out.items() if k != "wall_time_s"}


def test_issue_yaml_example_parses():
    text = """
model: llama-3.1-8b-instruct
server: {max_loras: 32, max_cpu_loras: 128, max_lora_rank: 16, max_num_seqs: 2048, max_num_batched_tokens: 2048}
adapters:
  - {count: 43, rank: 8, rate: 0.1}
  - {count: 43, rank: 16, rate: 0.05}
  - {count: 42, rank: 8, rate: 0.025}
arrivals: {kind: poisson}
lengths: {kind: sharegpt}
duration_s: 3600
seed: 0
"""
    sc = parse_scenario(yaml.safe_load(text), check_model=False)
    assert sc.served == 128 and sc.server.max_loras == 32
    assert sc.rates.sum() == pytest.approx(43 * 0.1 + 43 * 0.05 + 42 * 0.025)


def test_adapters_csv_and_lists(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("adapter_id,rank,rate\na,8,0.1\nb,16,0.2\n")
    base = scenario(max_loras=2, served=2)
    del base["adapters"]
    sc = parse_scenario(dict(base, adapters_csv=str(csv)), check_model=False)
    np.testing.assert_array_equal(sc.ranks, [8, 16])
    np.testing.assert_allclose(sc.rates, [0.1, 0.2])
    lists = parse_scenario(dict(base, adapters={"ranks": [8, 16], "rates": [0.1, 0.2]}), check_model=False)
    np.testing.assert_array_equal(lists.ranks, sc.ranks)


def bad(edit):
    sc = scenario(max_loras=8, served=24)
    edit(sc)
    return sc


INVALID = [
    ("model", lambda s: s.update(model="no-such-model")),
    ("server.max_loras", lambda s: s["server"].update(max_loras=25)),
    ("rank", lambda s: s["adapters"][0].update(rank=32)),
    ("rate", lambda s: s["adapters"][1].update(rate=-0.1)),
    ("colour", lambda s: s.update(colour="blue")),
    ("server.gpu", lambda s: s["server"].update(gpu="h100")),
    ("arrivals.kind", lambda s: s.update(arrivals={"kind": "bursty"})),
    ("duration_s", lambda s: s.update(duration_s=0)),
]


@pytest.mark.parametrize("field,edit", INVALID, ids=[f for f, _ in INVALID])
def test_invalid_scenario_names_the_field(field, edit):
    with pytest.raises(ScenarioError, match=field.replace(".", r"\.")):
        parse_scenario(bad(edit), check_model=field == "model")


@pytest.mark.parametrize("field,edit", INVALID[:5], ids=[f for f, _ in INVALID[:5]])
def test_cli_invalid_scenario_exits_with_one_line(tmp_path, field, edit):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad(edit)))
    args = [path] if field == "model" else [path, "--calibration", fixture_calibration(tmp_path)[0]]
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and field.split(".")[-1] in lines[0]
