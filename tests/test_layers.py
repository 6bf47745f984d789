"""The package's imports follow the pipeline: no module imports a later box, and no imports run in a circle.

The boxes, earliest first (`LAYERS`): shared foundations; measurements; calibration; the twin; the runner that
takes many scenarios through it (`adaptwin.runner`) and the resumable sweep on it (`adaptwin.sweep`); the twin's validation against real runs; the dataset;
the surrogates; placement; the claims report; and on top the parts that drive the pipeline (figures, the
command line and its per-package ``cli`` modules, the notebook runner, the vLLM profiling harness and its
live loop). A module may import its own box and earlier ones, never a later one. Imports inside functions
count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib" / "adaptwin"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "io", "paths", "params", "rules", "model_cards", "vllm_limits", "layout"),
    ("measurements",),
    ("calibration",),
    ("twin",),
    ("runner", "sweep"),
    ("validation",),
    ("dataset",),
    ("surrogate",),
    ("placement",),
    ("report",),
    ("figures", "cli", "notebook", "profiling", "__main__", "__init__"),
)
TOP = len(LAYERS) - 1


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def box(module: str) -> str:
    """The first component under ``adaptwin`` (``__init__`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(module: str) -> int:
    """The layer of a module: its box's, except that every ``*.cli`` module belongs to the command line."""
    if module.split(".")[-1] == "cli":
        return TOP
    name = box(module)
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    raise AssertionError(f"{module}: its box {name!r} has no layer in tests/test_layers.py LAYERS")


def imports(path: Path) -> set[str]:
    """The adaptwin modules ``path`` imports (module-level or inside functions), resolved to module names."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "adaptwin"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "adaptwin":
                continue
            # `from adaptwin.x import y` imports the module adaptwin.x.y when there is one, else a name of x
            modules = {f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")}
            found |= modules
            if len(modules) < len(node.names):
                found.add(target)
    return {m for m in found if _is_module(m)}


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (LIB / rel).with_suffix(".py").exists() or (LIB / rel / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) - {module_name(p)} for p in sorted(LIB.rglob("*.py"))}


def test_every_box_has_a_layer():
    for module in graph():
        layer(module)


def test_no_import_runs_back_up_the_pipeline():
    back = sorted(f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
                  for m, targets in graph().items() for t in targets if layer(t) > layer(m))
    assert not back, "imports from an earlier box to a later one:\n" + "\n".join(back)


def test_no_import_cycles():
    edges = graph()
    # a package's __init__ importing its own modules is how packages hand names on, not a cycle of meaning
    edges = {m: {t for t in ts if not (m == t.rpartition(".")[0] and _is_package(m))} for m, ts in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def _is_package(name: str) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (LIB / rel / "__init__.py").exists()


def test_the_checker_sees_a_backward_import(tmp_path):
    """The rule can fail: an import from the twin of a placement module is reported."""
    assert layer("adaptwin.placement.core") > layer("adaptwin.twin.engine")
    assert layer("adaptwin.twin.cli") == TOP and layer("adaptwin.rules") == 0


def test_the_data_layout_is_spelled_only_in_adaptwin_layout():
    """Readers and writers of a stage's outputs ask `adaptwin.layout.Layout`; nobody else joins the folder
    names of ``data/``, so a writer and its readers cannot drift apart."""
    import re

    from adaptwin.layout import Layout

    joined = re.compile(r'"(measurements|calibration|validation|dataset|models|metrics)"\s*/'
                        r'|"data/(measurements|calibration|validation|dataset|models|metrics)["/]')
    found = [f"{p.relative_to(LIB)}:{i}" for p in sorted(LIB.rglob("*.py")) if p.name != "layout.py"
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if joined.search(line) and not line.lstrip().startswith(("#", "paths = calibrate("))]
    assert not found, "data/ layout spelled outside adaptwin/layout.py: " + ", ".join(found)
    here = Layout(Path("d"))
    assert here.calibration("m") == Path("d/calibration/m.json") and here.metrics("x") == Path("d/metrics/x.json")
    assert here.fresh_dataset("m") == Path("d/dataset/fresh/m") and here.measurements("runs") == Path(
        "d/measurements/runs.parquet")
