"""Write a notebook from a list of (kind, source) cells, without outputs; the first code cell is tagged
``parameters`` (Papermill) so DVC stages can inject params.yaml values.

Used to (re)generate the stage notebooks from Python so they stay reviewable as plain text:
    python tools/new_notebook.py  # (imported by the generator scripts; no CLI of its own)

The parameters cell is not written by hand: `parameters_cell` builds it from params.yaml with
profiles/smoke.yaml on top, so the notebooks' smoke defaults cannot drift from the knobs DVC passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat

from adaptwin.notebook import SECTIONS, notebook_parameters
from adaptwin.params import load_params, load_profile, with_profile

#: longest parameter line before a dict value is wrapped (one item per line group)
WIDTH = 110


def literal(value: Any) -> str:
    """``value`` (parsed YAML) as Python source, strings in double quotes like the rest of the notebooks."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(str(k))}: {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def assignment(name: str, value: Any, comment: str = "") -> str:
    """``name = value``, a long dict wrapped over several lines, with an optional trailing comment."""
    line = f"{name} = {literal(value)}"
    if len(line) > WIDTH and isinstance(value, dict):
        indent = " " * (len(name) + 4)
        lines, current = [], f"{name} = {{"
        for i, (k, v) in enumerate(value.items()):
            item = f"{literal(str(k))}: {literal(v)}" + ("}" if i == len(value) - 1 else ",")
            if len(current) + len(item) + 1 > WIDTH and current.strip() not in ("", "{"):
                lines.append(current.rstrip())
                current = indent
            current += ("" if current.endswith(("{", " ")) else " ") + item
        line = "\n".join([*lines, current])
    return f"{line}  # {comment}" if comment else line


def parameters_cell(name: str) -> str:
    """The parameters cell of notebook ``name``: its Papermill parameters at the smoke profile, values that
    differ from params.yaml marked ``# smoke``."""
    smoke = load_profile("smoke")
    values = notebook_parameters(name, with_profile(load_params(), smoke))
    prefix = f"{SECTIONS[name]}."
    lines = [f"# Smoke values: params.yaml's `{SECTIONS[name]}` with profiles/smoke.yaml on top (marked `smoke`),",
             f"# written by tools/gen_{name}.py. DVC passes params.yaml's; paths are from the repository root."]
    for key, value in values.items():
        overridden = prefix + key in smoke or (key.endswith("_dir") and f"paths.{key[:-4]}" in smoke)
        lines.append(assignment(key, value, "smoke" if overridden else ""))
    return "\n".join(lines)


def write_notebook(path: str | Path, cells: list[tuple[str, str]]) -> Path:
    """``cells`` is a list of ("md" | "code", source); the first code cell becomes the parameters cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    tagged = False
    for kind, source in cells:
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source.strip()))
            continue
        cell = nbformat.v4.new_code_cell(source.strip())
        if not tagged:
            cell.metadata["tags"] = ["parameters"]
            tagged = True
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same file
        cell["id"] = f"cell-{i:02d}"
    path = Path(path)
    nbformat.write(nb, str(path))
    return path
