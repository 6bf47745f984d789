"""The workbench plumbing: atomic canonical writes, path resolution, stage parameters, the claims report."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

from adaptwin import io, notebook, report
from adaptwin.params import load_params, load_profile, with_profile
from adaptwin.paths import repo_root, resolve

ROOT = Path(__file__).resolve().parents[1]


def test_canonical_json_is_byte_identical_for_equal_content(tmp_path):
    a = io.write_json(tmp_path / "a.json", {"b": 1.5, "a": [1, 2]})
    b = io.write_json(tmp_path / "b.json", {"a": [1, 2], "b": 1.5})
    assert a.read_bytes() == b.read_bytes()


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "x.txt"
    io.write_text(target, "old")

    def broken(path: Path) -> None:
        path.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        io.atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]  # no temporary left behind


def test_nan_is_refused_in_json(tmp_path):
    with pytest.raises(ValueError):
        io.write_json(tmp_path / "n.json", {"x": float("nan")})


def test_repo_root_found_from_notebooks_folder():
    assert repo_root(ROOT / "notebooks") == ROOT
    assert resolve("data") == ROOT / "data"
    assert resolve("/abs/path") == Path("/abs/path")


def _parameter_cell(path: Path) -> dict:
    """The values assigned in a notebook's ``parameters`` cell (literals only, as Papermill needs)."""
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}


def test_every_params_section_key_is_a_notebook_parameter():
    """DVC injects each key of a stage's params.yaml section: the notebook must declare it (or Papermill
    would silently add an unused variable and the knob would do nothing), and declare nothing else; its
    values are the smoke profile's (params.yaml with profiles/smoke.yaml on top), never a hand-kept copy."""
    params = load_params(ROOT / "params.yaml")
    smoke = with_profile(params, load_profile("smoke", ROOT))
    for name, section in notebook.SECTIONS.items():
        path = ROOT / "notebooks" / f"{name}.ipynb"
        assert path.exists(), f"{path.name}: the notebook of stage section {section!r} is missing"
        assert section in params
        declared = _parameter_cell(path)
        injected = set(notebook.notebook_parameters(name, params))
        assert injected <= set(declared), f"{path.name}: params.yaml keys not declared: {sorted(injected - set(declared))}"
        assert set(declared) <= injected, f"{path.name}: parameters not in params.yaml: {sorted(set(declared) - injected)}"
        for key, value in notebook.notebook_parameters(name, smoke).items():
            assert declared[key] == value, f"{path.name}: {key} = {declared[key]!r}, the smoke profile says {value!r}"


def test_smoke_profile_names_params_yaml_keys_only():
    with pytest.raises(KeyError, match="dataset.n_scenarioz"):
        with_profile(load_params(ROOT / "params.yaml"), {"dataset.n_scenarioz": [1]})
    with_profile(load_params(ROOT / "params.yaml"), load_profile("smoke", ROOT))  # every smoke key exists


@pytest.mark.parametrize("profile", [None, "smoke", "paper"])
def test_every_stage_config_accepts_its_params_section(profile):
    params = load_params(ROOT / "params.yaml")
    if profile:
        params = with_profile(params, load_profile(profile, ROOT))
    for section in notebook.CONFIGS:
        notebook.check_section(section, params[section] or {})


#: marks a key removed from the section in the test below
DROP = object()


@pytest.mark.parametrize(("section", "changes", "message"), [
    ("dataset", {"duraton_s": 60}, r"^dataset\.duraton_s: unknown key"),
    ("dataset", {"engine": "spark"}, r"^dataset\.engine: 'spark' is not one of dask, serial$"),
    ("dataset", {"load_range": [1.0]}, r"^dataset\.load_range: \[1\.0\] is not tuple\[float, float\]$"),
    ("dataset", {"n_scenarios": DROP}, r"^dataset\.n_scenarios: missing"),
    ("surrogates", {"threads": "two"}, r"^surrogates\.threads: 'two' is not int$"),
    ("validation", {"max_runs": 1.5}, r"^validation\.max_runs: 1\.5 is not int \| None$"),
    ("validation", {"pool_means": 1}, r"^validation\.pool_means: 1 is not bool$"),
    ("calibration", {"models": ["gpt-9"]}, r"^calibration: unknown model 'gpt-9'"),
    ("measurements", {"backend": "gpu"}, r"^measurements\.backend: 'gpu' is not one of replay, vllm$"),
    ("report", {"claims": 3}, r"^report\.claims: unknown key"),
])
def test_stage_configs_name_a_bad_key_or_value(section, changes, message):
    values = {**(load_params(ROOT / "params.yaml")[section] or {}), **changes}
    values = {k: v for k, v in values.items() if v is not DROP}
    with pytest.raises(ValueError, match=message):
        notebook.check_section(section, values)


def test_notebooks_are_committed_without_outputs():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        assert not any(c.get("outputs") for c in nb["cells"]), path.name


def test_claim_lookup_handles_dotted_model_names():
    data = {"llama-3.1-8b-instruct": {"real_runs": {"throughput_smape_pct": 3.2}}}
    assert report.lookup(data, "llama-3.1-8b-instruct.real_runs.throughput_smape_pct") == 3.2
    assert report.lookup(data, "qwen.real_runs") is None


def test_claims_report_verdicts_follow_the_metrics(tmp_path):
    metrics = tmp_path / "metrics"
    io.write_json(metrics / "twin_validation.json", {"throughput_smape_pct": 3.0, "itl_smape_pct": 12.0})
    rows = {r["claim"]: r for r in report.write_claims(metrics, tmp_path / "claims.md")}
    assert rows["Digital twin reproduces real throughput (usual SMAPE)"]["verdict"] == "holds"
    assert rows["Digital twin ITL error (usual SMAPE)"]["verdict"] == "does not hold"
    assert rows["Surrogate prediction time, one at a time"]["verdict"] == "not measured"
    text = (tmp_path / "claims.md").read_text()
    assert "1 hold, 1 do not hold" in text


def test_paths_inside_the_repository_are_shown_relative_to_it(tmp_path):
    from adaptwin.paths import repo_root, shown

    assert shown(repo_root() / "data" / "metrics" / "surrogates.json") == "data/metrics/surrogates.json"
    assert shown(tmp_path / "x.json") == str(tmp_path / "x.json")


@pytest.mark.parametrize("generator", sorted((ROOT / "tools").glob("gen_*.py")), ids=lambda p: p.stem)
def test_committed_notebooks_equal_their_generators(generator, tmp_path, monkeypatch):
    """A notebook has one source of truth, its generator: regenerating must not change the committed file."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location(generator.stem, generator)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    name = generator.stem.removeprefix("gen_") + ".ipynb"
    fresh = module.write_notebook(tmp_path / name, module.CELLS)
    assert fresh.read_text() == (ROOT / "notebooks" / name).read_text(), (
        f"notebooks/{name} differs from tools/{generator.name}: run `python tools/{generator.name}`")


def test_stage_kernels_are_pinned_so_outputs_do_not_depend_on_the_cpu():
    """A stage's kernel runs NumPy without AVX-512 paths and OpenBLAS with its Haswell kernels, whatever the
    machine offers (a child process given the pinned variables reports both)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, **notebook.pinned_kernel_env({}, "x86_64")}
    probe = ("import json\n"
             "from numpy._core._multiarray_umath import __cpu_features__ as f\n"
             "from threadpoolctl import threadpool_info\n"
             "print(json.dumps({'x86_v4': f['X86_V4'], 'blas': [i.get('architecture') for i in threadpool_info()"
             " if i.get('internal_api') == 'openblas']}))")
    out = json.loads(subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                                    check=True).stdout)
    assert out == {"x86_v4": False, "blas": ["Haswell"]}


def test_kernel_pinning_keeps_a_users_choice_and_skips_other_architectures():
    assert notebook.pinned_kernel_env({"OPENBLAS_CORETYPE": "Zen"}, "x86_64") == {
        "NPY_DISABLE_CPU_FEATURES": notebook.PINNED_KERNELS["NPY_DISABLE_CPU_FEATURES"]}
    assert notebook.pinned_kernel_env({}, "aarch64") == {}
