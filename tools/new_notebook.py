"""Write a notebook from a list of (kind, source) cells, without outputs; the first code cell is tagged
``parameters`` (Papermill) so DVC stages can inject params.yaml values.

Used to (re)generate the stage notebooks from Python so they stay reviewable as plain text:
    python tools/new_notebook.py  # (imported by the generator scripts; no CLI of its own)
"""

from __future__ import annotations

from pathlib import Path

import nbformat


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
