"""Read params.yaml: every knob of the pipeline lives there, grouped by stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from adaptwin.paths import repo_root


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """The parsed params.yaml (default: the repository's)."""
    path = Path(path) if path else repo_root() / "params.yaml"
    with open(path) as fh:
        return yaml.safe_load(fh)


def shared_dir(params: dict[str, Any] | None = None) -> Path:
    """The folder holding ``vllm-measurements/`` and ``traces/`` (``paths.shared`` in params.yaml)."""
    from adaptwin.paths import resolve

    params = params or load_params()
    return resolve(params["paths"]["shared"])
