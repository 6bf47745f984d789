"""Where things live: the repository root, params.yaml, the shared data folder, and how paths are read.

Three rules, each where a user would expect it:
- notebooks run from ``notebooks/`` (JupyterLab, nbval) or from the root (Papermill under DVC), so the paths a
  notebook receives (and the defaults the pipeline writes, ``data/...``) resolve against the repository root
  (`resolve`);
- paths typed on the command line resolve against the current folder, like any other command (`from_cwd`);
- paths inside a scenario file resolve against that file's folder (`adaptwin.twin.scenario.load_scenario_file`).
The library itself takes paths as given (relative to the process's current folder).
"""

from __future__ import annotations

import os
from pathlib import Path

_MARKERS = ("params.yaml", "pyproject.toml")


def repo_root(start: Path | None = None) -> Path:
    """The nearest ancestor of ``start`` (default: cwd) holding params.yaml and pyproject.toml."""
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if all((candidate / m).exists() for m in _MARKERS):
            return candidate
    # Installed elsewhere (e.g. site-packages): fall back to the source tree this file came from.
    source = Path(__file__).resolve().parents[2]
    if all((source / m).exists() for m in _MARKERS):
        return source
    raise FileNotFoundError(f"no adaptwin repository (params.yaml + pyproject.toml) above {here}")


def resolve(path: str | os.PathLike, root: Path | None = None) -> Path:
    """``path`` if absolute, else relative to the repository root."""
    p = Path(path)
    return p if p.is_absolute() else (root or repo_root()) / p


def from_cwd(path: str | os.PathLike) -> Path:
    """A command-line path: absolute, relative ones taken from the current folder (``~`` expanded)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def shown(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when it lies inside it (outputs then read the same in every
    clone), else as given."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(repo_root()))
    except (ValueError, FileNotFoundError):
        return str(p)
