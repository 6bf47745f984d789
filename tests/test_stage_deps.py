"""Each DVC stage lists, in its ``deps``, every adaptwin module its code runs.

A stage whose deps miss a module it imports is not re-run when that module changes, so `dvc repro` would
serve results of the old code. The modules are found from the code itself (the notebook's code cells, or the
stage's script), following imports through ``lib/adaptwin`` -- including imports inside functions, which run
too -- so the check stays right when modules move.
"""

from __future__ import annotations

import ast
import json
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib"
STAGES: dict = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The file that defines adaptwin module ``name`` (a package's ``__init__.py``), or None."""
    if name.split(".")[0] != "adaptwin":
        return None
    base = LIB.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """Import nodes under ``if TYPE_CHECKING:`` (never executed)."""
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(n for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imported_names(tree: ast.AST, package: str) -> set[str]:
    """Every module name ``tree`` imports (``from a import b`` also names ``a.b``: it may be a submodule);
    ``package`` resolves relative imports."""
    names: set[str] = set()
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def closure(names: set[str]) -> set[Path]:
    """The files of every adaptwin module that importing ``names`` runs: the modules, their parent
    packages' ``__init__.py`` and, transitively, what those import."""
    seen: set[Path] = set()
    todo = list(names)
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]))
            if path is None or path in seen:
                continue
            seen.add(path)
            module = ".".join(path.relative_to(LIB).with_suffix("").parts)
            package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rpartition(".")[0]
            todo.extend(imported_names(ast.parse(path.read_text()), package))
    return seen


def stage_code(cmd: str) -> ast.Module:
    """The code a stage command runs: a notebook's code cells (``python -m adaptwin.notebook NAME``) or a
    Python script (``python path.py ...``)."""
    words = shlex.split(cmd)
    if words[1:3] == ["-m", "adaptwin.notebook"]:
        cells = json.loads((ROOT / "notebooks" / f"{words[3]}.ipynb").read_text())["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        return ast.parse(source)
    if words[1].endswith(".py"):
        return ast.parse((ROOT / words[1]).read_text())
    raise AssertionError(f"stage command {cmd!r}: neither a notebook nor a Python script")


def covered(path: Path, deps: list[str]) -> bool:
    """Whether ``path`` is a dep or inside a folder that is one."""
    for dep in deps:
        target = ROOT / dep
        if path == target or target in path.parents:
            return True
    return False


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_the_modules_it_runs(stage):
    spec = STAGES[stage]
    deps = [d for d in spec.get("deps", []) if isinstance(d, str) and "${" not in d]
    modules = closure(imported_names(stage_code(spec["cmd"]), ""))
    missing = sorted(str(p.relative_to(ROOT)) for p in modules if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage}: deps miss modules its code imports: {', '.join(missing)}"


def test_the_import_walk_follows_lazy_imports_and_packages():
    """A module imported inside a function is found, and so are the packages around it."""
    tree = ast.parse("def f():\n    from adaptwin.dataset.stage import run_stage\n")
    files = {str(p.relative_to(LIB)) for p in closure(imported_names(tree, ""))}
    assert {"adaptwin/__init__.py", "adaptwin/dataset/__init__.py", "adaptwin/dataset/stage.py",
            "adaptwin/sweep.py"} <= files


def test_a_missing_module_is_reported():
    files = closure({"adaptwin.report"})
    assert not all(covered(p, ["lib/adaptwin/report.py"]) for p in files)  # report imports adaptwin.params
    assert all(covered(p, ["lib/adaptwin"]) for p in files)
