"""The command line as an operator meets it: every mistake a user can make exits 2 with one line naming the
file, field and value (never a traceback); paths resolve against the current folder (command line) or the
scenario file's folder; outputs are replaced whole or not at all; the library and the command agree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from test_placement_cli import MODEL, fake_workload, models_dir  # noqa: F401 - models_dir is a fixture
from test_placement_fakes import BASE_CAPACITY, FIXTURE, FakePredictor, fake_evaluator

from adaptwin import cli, paths
from adaptwin.calibration.costs import CalibrationError
from adaptwin.cli import main
from adaptwin.placement.api import Context, adapter_bound, make_context, place

LIB = Path(__file__).resolve().parents[1] / "lib"
SCENARIO = {"model": MODEL, "server": {"max_loras": 2, "max_lora_rank": 16},
            "adapters": [{"count": 2, "rank": 8, "rate": 0.1}], "duration_s": 20}


def workload_file(name: str, rows: list[tuple[str, int, float]]):
    def setup(folder: Path) -> None:
        pl.DataFrame(rows, schema=["adapter_id", "rank", "rate"], orient="row").write_csv(folder / name)
    return setup


def scenario_file(name: str, **server):
    def setup(folder: Path) -> None:
        (folder / name).write_text(yaml.safe_dump({**SCENARIO, "server": {**SCENARIO["server"], **server}}))
    return setup


def file_named(name: str):
    def setup(folder: Path) -> None:
        (folder / name).write_text("not a folder\n")
    return setup


def folder_with(name: str, entry: str):
    def setup(folder: Path) -> None:
        (folder / name).mkdir()
        (folder / name / entry).write_text("mine\n")
        workload_file("w.csv", [("a", 8, 0.1)])(folder)
    return setup


def both(*setups):
    def setup(folder: Path) -> None:
        for s in setups:
            s(folder)
    return setup


GOOD = workload_file("w.csv", [("a", 8, 0.1), ("b", 16, 0.2)])
PLACE = ["place", "w.csv", "--model", MODEL, "--out", "out", "--calibration", str(FIXTURE)]
# case: (setup of the current folder, argv, substrings the one line must hold)
CASES = {
    "place before data/models exists": (GOOD, PLACE, ["data/models", "metadata.json", "not found"]),
    "place --models-dir nowhere": (GOOD, [*PLACE, "--models-dir", "nowhere"], ["--models-dir", "nowhere"]),
    "place unknown model + --calibration": (GOOD, ["place", "w.csv", "--model", "no-such-model", "--out", "out",
                                                   "--calibration", str(FIXTURE)],
                                            [str(FIXTURE), "field model", "no-such-model"]),
    "place unknown model, no calibration": (GOOD, ["place", "w.csv", "--model", "no-such-model", "--out", "out"],
                                            ["no-such-model.json", "calibration file not found"]),
    "place missing workload": (None, PLACE, ["w.csv", "workload file not found"]),
    "place --fast --repair": (GOOD, [*PLACE, "--fast", "--repair"], ["--fast --repair"]),
    "place --out names a file": (both(GOOD, file_named("out")), PLACE, ["out", "not a folder"]),
    "place --out holds other files": (folder_with("out", "notes.txt"), PLACE, ["out", "'notes.txt'"]),
    "ingest --out names a file": (file_named("out"), ["ingest", "--source", ".", "--out", "out"],
                                  ["out", "not a folder"]),
    "ingest --source nowhere": (None, ["ingest", "--source", "nowhere", "--out", "o"], ["--source", "nowhere"]),
    "profile with a missing config": (None, ["profile", "nope.yaml"], ["nope.yaml", "not found"]),
    "simulate max_lora_rank 24": (scenario_file("s.yaml", max_lora_rank=24),
                                  ["simulate", "s.yaml", "--calibration", str(FIXTURE)],
                                  ["s.yaml", "server.max_lora_rank", "24", "vLLM 0.8.5"]),
    "simulate max_lora_rank 64 beyond the calibration": (
        scenario_file("s.yaml", max_lora_rank=64), ["simulate", "s.yaml", "--calibration", str(FIXTURE)],
        ["s.yaml", "server.max_lora_rank", "64", "calibrated", "--extrapolate"]),
    "simulate missing scenario": (None, ["simulate", "s.yaml", "--calibration", str(FIXTURE)], ["s.yaml", "not found"]),
    "simulate invalid field": (scenario_file("s.yaml", max_loras=5), ["simulate", "s.yaml", "--calibration",
                                                                       str(FIXTURE)],
                               ["s.yaml", "server.max_loras", "5"]),
    "place rank 24": (workload_file("w.csv", [("a", 8, 0.1), ("b", 24, 0.1)]), PLACE,
                      ["w.csv", "row 3", "field rank", "24", "vLLM 0.8.5"]),
    "place rank 64 without --extrapolate": (workload_file("w.csv", [("a", 64, 0.1)]), PLACE,
                                            ["w.csv", "row 2", "field rank", "64", "--extrapolate"]),
    **{f"place adapter id with {label}": (workload_file("w.csv", [("ok", 8, 0.1), (bad_id, 8, 0.1)]), PLACE,
                                          ["w.csv", "row 3", "field adapter_id", repr(bad_id)])
       for label, bad_id in [("=", "a=b"), (",", "a,b"), ("/", "org/a"), ("a space", "a b"), ("$", "a$(x)")]},
}


@pytest.fixture
def outside(tmp_path, monkeypatch) -> Path:
    """A current folder outside the repository, and a repository without data/ (as in a fresh checkout)."""
    fake_root = tmp_path / "repo"
    fake_root.mkdir()
    monkeypatch.setattr(paths, "repo_root", lambda start=None: fake_root)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    return here


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_user_mistake_exits_2_with_one_line(case, outside, capsys):
    setup, argv, expected = CASES[case]
    if setup:
        setup(outside)
    before = sorted(p.name for p in outside.iterdir())
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"adaptwin {argv[0]}: ")
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert sorted(p.name for p in outside.iterdir()) == before  # nothing written


def test_a_bug_exits_1_with_a_hint_and_no_traceback(outside, capsys, monkeypatch):
    import adaptwin.twin.cli as twin_cli

    def broken(args):
        raise KeyError("oops")

    monkeypatch.setattr(twin_cli, "run_simulate", broken)
    assert main(["simulate", "s.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err and "ADAPTWIN_DEBUG=1" in err


def test_no_traceback_in_a_real_process(tmp_path):
    """The same contract through the installed entry point, from a folder outside the repository."""
    (tmp_path / "w.csv").write_text("adapter_id,rank,rate\na=b,8,0.1\n")
    proc = subprocess.run([sys.executable, "-m", "adaptwin", *PLACE], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120, env={"PYTHONPATH": str(LIB), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"adaptwin place: {tmp_path / 'w.csv'}: row 2: field adapter_id: 'a=b' cannot be "
                                   "an adapter name (1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter "
                                   "or digit)")


def test_library_simulate_takes_a_calibration_path_as_given(tmp_path, monkeypatch):
    from adaptwin.twin import simulate

    monkeypatch.chdir(tmp_path)
    with pytest.raises(CalibrationError, match="cal.json"):
        simulate(SCENARIO, "cal.json")
    shutil.copy(FIXTURE, tmp_path / "cal.json")
    assert simulate(SCENARIO, "cal.json")["finished_requests"] > 0


def test_scenario_paths_are_relative_to_the_scenario_file(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "adapters.csv").write_text("adapter_id,rank,rate\na,8,0.1\nb,16,0.2\n")
    scenario = {k: v for k, v in SCENARIO.items() if k != "adapters"} | {"adapters_csv": "adapters.csv"}
    (folder / "s.yaml").write_text(yaml.safe_dump(scenario))
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "scenarios/s.yaml", "--calibration", str(FIXTURE), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finished_requests"] > 0


def test_place_from_outside_the_repository_writes_there(models_dir, tmp_path):  # noqa: F811
    (tmp_path / "models").symlink_to(models_dir)
    shutil.copy(FIXTURE, tmp_path / "cal.json")
    fake_workload(40, mean_rate=0.15).write_csv(tmp_path / "w.csv")
    argv = ["place", "w.csv", "--model", MODEL, "--out", "out", "--models-dir", "models", "--calibration",
            "cal.json", "--fast"]
    proc = subprocess.run([sys.executable, "-m", "adaptwin", *argv], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300, env={"PYTHONPATH": str(LIB), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "placement.json").is_file() and (tmp_path / "out" / "serve_gpu0.sh").is_file()
    assert proc.stdout.strip().endswith("-> out")
    assert not (paths.repo_root() / "out").exists()


def test_an_interrupt_leaves_the_previous_complete_output(models_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    import adaptwin.placement.export as export

    fake_workload(30, mean_rate=0.15).write_csv(tmp_path / "w.csv")
    out = tmp_path / "out"
    argv = ["place", str(tmp_path / "w.csv"), "--model", MODEL, "--out", str(out), "--models-dir", str(models_dir),
            "--calibration", str(FIXTURE), "--fast"]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = export.write_placement

    def interrupted(placement, folder, *args):
        real(placement, folder, *args)
        (Path(folder) / "serve_gpu0.sh").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "write_placement", interrupted)
    assert main(argv) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "w.csv"]  # no temporary sibling left
    fresh = tmp_path / "fresh"
    assert main([*argv[:5], str(fresh), *argv[6:]]) == 130 and not fresh.exists()
    assert "interrupted" in capsys.readouterr().err


def test_library_and_command_give_one_answer(models_dir, tmp_path):  # noqa: F811
    from adaptwin.placement.verified import place_fast

    workload = fake_workload(50, mean_rate=0.15)
    workload.write_csv(tmp_path / "w.csv")
    assert main(["place", str(tmp_path / "w.csv"), "--model", MODEL, "--out", str(tmp_path / "out"), "--models-dir",
                 str(models_dir), "--calibration", str(FIXTURE), "--fast"]) == 0
    doc = json.loads((tmp_path / "out" / "placement.json").read_text())
    context = make_context(MODEL, models_dir=models_dir, calibration_path=FIXTURE)
    assert {k: v for k, v in doc.items() if k != "verification"} == place_fast(workload, context).to_json()
    if doc["verification"]["sanity_bound"] is None:
        assert place(workload, MODEL, models_dir=models_dir, calibration_path=FIXTURE).to_json()["gpus"] == doc["gpus"]


class AlwaysStarving(FakePredictor):
    """A surrogate as badly trained as the smoke profile's: every GPU, even one adapter alone, starves."""

    def predict(self, features: pl.DataFrame) -> pl.DataFrame:
        out = super().predict(features)
        return out.with_columns(pl.lit(1.0).alias("starvation_probability"), pl.lit(True).alias("starved"))


def test_a_bad_surrogate_cannot_split_every_adapter():
    ev = fake_evaluator()
    ev.predictor = AlwaysStarving()
    context = Context(MODEL, ev, BASE_CAPACITY, "fake", "test")
    workload = fake_workload(20, mean_rate=0.1)
    p = place(workload, context, "greedy")
    assert p.num_gpus <= adapter_bound(workload, context) == 20
    assert "split 20 adapters into 1280 shares" in p.notes["sanity_bound"] and "capped at 20 shares" in p.notes["sanity_bound"]
    assert sorted({m for g in p.gpus for m in g.members}) == list(range(20))


def test_version_and_the_scenario_format_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip().startswith("adaptwin ")
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = capsys.readouterr().out
    example = text.split("describes one vLLM server and its load:\n")[1].split("\n\n")[0]
    from adaptwin.twin import parse_scenario

    sc = parse_scenario(yaml.safe_load(textwrap.dedent(example)), check_model=False)
    assert sc.served == 128 and sc.server.max_lora_rank == 16 and np.isclose(sc.rates.sum(), 64 * 0.15)
    assert "relative to the file's folder" in text and "tokens/s" in text


def test_each_module_input_error_is_an_input_error():
    from adaptwin.calibration.costs import CalibrationError
    from adaptwin.errors import InputError, UsageError
    from adaptwin.io import OutputDirError
    from adaptwin.placement.core import PlacementError
    from adaptwin.surrogate.model import SurrogateError
    from adaptwin.twin.scenario import ScenarioError

    for error in (UsageError, OutputDirError, PlacementError, SurrogateError, CalibrationError, ScenarioError):
        assert issubclass(error, InputError) and issubclass(error, ValueError), error


def test_no_sub_command_imports_the_top_level_command_line():
    """The exit-2 rule lives in adaptwin.errors: a box's own command (``twin/cli.py``, ...) must not pull in
    adaptwin.cli, which imports every box up to the placement (tests/test_layers.py lets top modules import
    each other, so this is checked here)."""
    import ast

    commands = sorted(Path(cli.__file__).parent.glob("*/cli.py"))
    assert len(commands) >= 4
    for path in commands:
        tree = ast.parse(path.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert "adaptwin.cli" not in imported, path


def test_an_interrupted_ingest_keeps_the_previous_tables(tmp_path, monkeypatch, capsys):
    import adaptwin.measurements.corpus as corpus

    out = tmp_path / "tables"
    out.mkdir()
    (out / "runs.parquet").write_bytes(b"previous")

    def interrupted(source, folder, progress=False):
        (Path(folder) / "runs.parquet").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus, "ingest", interrupted)
    assert main(["ingest", "--source", str(tmp_path), "--out", str(out)]) == 130
    assert [p.name for p in out.iterdir()] == ["runs.parquet"] and (out / "runs.parquet").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tables"]
    assert "interrupted" in capsys.readouterr().err


def test_a_bad_surrogate_still_splits_an_adapter_busier_than_a_gpu():
    ev = fake_evaluator()
    ev.predictor = AlwaysStarving()
    context = Context(MODEL, ev, BASE_CAPACITY, "fake", "test")
    workload = fake_workload(20, mean_rate=0.1)
    heavy = 2.5 * BASE_CAPACITY / ev.tokens_per_request  # 2.5 GPUs of load: 5 shares at half a GPU each
    workload = workload.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(heavy).otherwise(pl.col("rate"))
                                     .alias("rate"))
    p = place(workload, context, "greedy")
    assert p.num_gpus <= adapter_bound(workload, context) == 24
    assert 2 <= sum(0 in g.members for g in p.gpus) <= 5


class LonelyStarving(FakePredictor):
    """A surrogate wrong on small GPUs only (few training rows there): GPUs of fewer adapters than the greedy's
    patience can step over (`greedy.PATIENCE` + 2) always starve, so the greedy gives each adapter a GPU."""

    def predict(self, features: pl.DataFrame) -> pl.DataFrame:
        from adaptwin.placement.greedy import PATIENCE

        out = super().predict(features)
        few = features["served_adapters"].to_numpy() < PATIENCE + 2
        return out.with_columns(pl.Series("starvation_probability", np.where(few, 1.0, out["starvation_probability"])))


def test_fast_placement_gives_way_to_a_baseline_predicted_safe_on_fewer_gpus():
    from adaptwin.placement.verified import FAST_BASELINES, place_fast

    ev = fake_evaluator()
    ev.predictor = LonelyStarving()
    context = Context(MODEL, ev, BASE_CAPACITY, "fake", "test")
    workload = fake_workload(40, mean_rate=0.1)
    greedy = place(workload, context, "greedy")
    fast = place_fast(workload, context)
    assert fast.num_gpus < greedy.num_gpus and all(g.safe for g in fast.gpus)
    assert fast.notes["fallback_method"] in FAST_BASELINES and "predicted safe" in fast.notes["sanity_bound"]
    assert fast.method == "greedy" and fast.notes["verified"] is False


def test_sigterm_is_an_interrupt_one_line_exit_130(tmp_path):
    """``kill`` (or a scheduler's stop) ends a long command like Ctrl-C: one line, exit 130, no traceback."""
    import signal
    import time

    long = {**SCENARIO, "server": {"max_loras": 64, "max_lora_rank": 16},
            "adapters": [{"count": 64, "rank": 8, "rate": 2.0}], "duration_s": 36000}
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(long))
    proc = subprocess.Popen([sys.executable, "-m", "adaptwin", "simulate", "long.yaml", "--calibration", str(FIXTURE)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(LIB), "PATH": "/usr/bin:/bin"})
    time.sleep(4.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and out == ""
    assert err.strip() == "adaptwin simulate: interrupted; outputs left as they were"


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_atomic_dir_replaces_a_previous_output_whole(tmp_path, monkeypatch, exchange):
    from adaptwin import io

    if not exchange:
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    for names in (["a.sh", "b.sh"], ["c.sh"]):
        with io.atomic_dir(out) as tmp:
            for name in names:
                (tmp / name).write_text(name)
        assert sorted(p.name for p in out.iterdir()) == sorted([*names, io.MANIFEST])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (out / "mine.txt").write_text("a user's file")
    with pytest.raises(io.OutputDirError, match="mine.txt"):
        with io.atomic_dir(out):
            pass
