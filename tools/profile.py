"""Print `dvc exp run` arguments that apply a profile (profiles/<name>.yaml) on top of params.yaml.

A profile is a flat YAML mapping of dotted params keys to values, e.g. ``dataset.n_scenarios: 45000``.
`make repro-paper` runs ``dvc exp run $(python tools/profile.py paper)``, so params.yaml stays the default
profile in git and the paper-scale run is recorded as a DVC experiment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def set_param_args(name: str, root: Path) -> list[str]:
    """``--set-param key=value`` pairs for every entry of ``profiles/<name>.yaml``."""
    path = root / "profiles" / f"{name}.yaml"
    if not path.exists():
        raise SystemExit(f"{path}: no such profile")
    overrides = yaml.safe_load(path.read_text()) or {}
    args = []
    for key, value in overrides.items():
        args += ["--set-param", f"{key}={json.dumps(value, separators=(',', ':'))}"]
    return args


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    print(" ".join(set_param_args(sys.argv[1], root)))
