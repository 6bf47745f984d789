"""Run a stage notebook through Papermill with its knobs from params.yaml (used by every DVC stage).

Each notebook's first cell (tagged ``parameters``) declares its knobs with *smoke* defaults (params.yaml with
profiles/smoke.yaml on top, written there by its generator ``tools/gen_*.py``), so nbval and JupyterLab run it
quickly into ``.smoke/``. A DVC stage calls ``python -m adaptwin.notebook NAME``: this reads
the notebook's section of params.yaml, adds the paths, and executes the notebook into ``data/notebooks/``.

    python -m adaptwin.notebook 04_dataset
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
from typing import Any

from adaptwin.params import load_params
from adaptwin.paths import repo_root

#: notebook name -> section of params.yaml holding its knobs
SECTIONS: dict[str, str] = {
    "01_measurements": "measurements",
    "02_calibrate": "calibration",
    "03_validate_twin": "validation",
    "04_dataset": "dataset",
    "05_surrogates": "surrogates",
    "06_placement": "placement",
    "07_report": "report",
}


#: section of params.yaml -> the config class (module:name) whose ``from_params`` checks it before a run
CONFIGS: dict[str, str] = {
    "measurements": "adaptwin.measurements.stage:MeasurementsConfig",
    "calibration": "adaptwin.calibration.fit:CalibrationConfig",
    "validation": "adaptwin.validation.runs:ValidationConfig",
    "dataset": "adaptwin.dataset.stage:DatasetConfig",
    "surrogates": "adaptwin.surrogate.stage:SurrogateConfig",
    "report": "adaptwin.report:ReportConfig",
}


def check_section(section: str, values: dict[str, Any]) -> None:
    """Refuse a params.yaml section its stage's config does not accept, before the notebook starts: Papermill
    would inject a misspelt key as an unused variable, and a bad value would fail deep inside a long run."""
    if section not in CONFIGS:
        return
    module, name = CONFIGS[section].split(":")
    getattr(importlib.import_module(module), name).from_params(values)


def notebook_parameters(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The Papermill parameters for notebook ``name``: pipeline paths plus its params.yaml section."""
    paths = params["paths"]
    values: dict[str, Any] = {
        "data_dir": paths["data"],
        "figures_dir": paths["figures"],
        "shared_dir": paths["shared"],
        "reports_dir": paths.get("reports", "reports"),
    }
    values.update(params.get(SECTIONS[name]) or {})
    return values


#: CPU kernels every stage runs with on x86-64: NumPy dispatches to AVX2 code at most (no AVX-512 paths) and
#: OpenBLAS uses its Haswell kernels. Both otherwise pick kernels by CPU, and the kernels round differently:
#: the calibration written on an AVX-512 machine differed in the last digits from the same fit with AVX2
#: kernels, so outputs (and DVC's hashes of them) changed from machine to machine.
PINNED_KERNELS: dict[str, str] = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Haswell",
}


def pinned_kernel_env(environ: dict[str, str] | None = None, machine: str | None = None) -> dict[str, str]:
    """The variables of `PINNED_KERNELS` to add to ``environ`` (default ``os.environ``): none off x86-64, and
    none the user already set (an explicit choice wins)."""
    environ = os.environ if environ is None else environ
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return {}
    return {k: v for k, v in PINNED_KERNELS.items() if k not in environ}


def run(name: str, output_dir: str = "data/notebooks") -> None:
    """Execute ``notebooks/<name>.ipynb`` into ``<output_dir>/<name>.ipynb`` with params.yaml values."""
    import papermill as pm

    if name not in SECTIONS:
        raise SystemExit(f"unknown notebook {name!r}; known: {', '.join(SECTIONS)}")
    root = repo_root()
    params = load_params(root / "params.yaml")
    check_section(SECTIONS[name], params.get(SECTIONS[name]) or {})
    out = root / output_dir / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.update(pinned_kernel_env())  # the kernel and its Dask workers inherit them
    pm.execute_notebook(
        str(root / "notebooks" / f"{name}.ipynb"),
        str(out),
        parameters=notebook_parameters(name, params),
        cwd=str(root / "notebooks"),
        kernel_name="python3",
        progress_bar=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptwin.notebook", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(SECTIONS))
    parser.add_argument("--output-dir", default="data/notebooks")
    args = parser.parse_args(argv)
    run(args.name, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
