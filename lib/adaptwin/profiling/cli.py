"""``adaptwin profile CONFIG.yaml --out DIR`` and ``run_from_config`` (notebook 01 with ``backend: vllm``).

Both write the ``runs``, ``timeseries`` and ``kv_capacity`` tables of the replay ingest into the output
folder (the other ingest tables come from corpus families a profile does not run); adapters, server logs
and per-run result JSON go to the config's ``work_dir``. Without vLLM or a GPU they stop before
doing anything, with a message naming what is missing.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from adaptwin.measurements import schema
from adaptwin.paths import resolve
from adaptwin.profiling.config import load_config
from adaptwin.profiling.runner import ServerFactory, run_all
from adaptwin.profiling.server import ProfilingUnavailable
from adaptwin.profiling.writers import to_frame, write_tables


@dataclass
class ProfileReport:
    """What a profiling session produced: the tables (as frames) and where they were written."""

    runs: pl.DataFrame
    timeseries: pl.DataFrame
    paths: dict[str, Path]
    kv_capacity: pl.DataFrame = field(default_factory=lambda: schema.empty("kv_capacity"))

    def status_counts(self) -> dict[str, int]:
        """Runs per status, e.g. ``{'ok': 3, 'memory_error': 1}``."""
        return dict(sorted(self.runs["status"].value_counts().iter_rows())) if self.runs.height else {}


def run_from_config(
    config_path: str | os.PathLike, out_dir: str | os.PathLike, factory: ServerFactory | None = None
) -> ProfileReport:
    """Run every configuration of ``config_path`` and write ``runs``/``timeseries``/``kv_capacity`` Parquet
    into ``out_dir``.

    Relative paths are resolved against the repository root. ``factory`` replaces ``vllm serve`` (tests).
    Raises ``ProfilingUnavailable`` when vLLM or a GPU is missing (and no factory is given).
    """
    cfg = load_config(resolve(config_path))
    outcomes = run_all(cfg, resolve(cfg.work_dir), factory)
    runs = to_frame("runs", [o.run for o in outcomes])
    series = to_frame("timeseries", [row for o in outcomes for row in o.timeseries])
    kv = to_frame("kv_capacity", [o.kv_capacity for o in outcomes if o.kv_capacity is not None])
    paths = write_tables(resolve(out_dir), {"runs": runs, "timeseries": series, "kv_capacity": kv})
    return ProfileReport(runs, series, paths, kv)


def run_profile(args: argparse.Namespace) -> int:
    """Entry point of ``adaptwin profile``: 0 on success, 2 when vLLM/GPU are missing or the configuration is
    bad (one line on stderr naming the file, field and value)."""
    try:
        report = run_from_config(args.config, args.out)
    except (ProfilingUnavailable, ValueError) as exc:  # missing vLLM/GPU, or a configuration vLLM refuses
        print(f"adaptwin profile: {exc}", file=sys.stderr)
        return 2
    print(
        f"{report.runs.height} runs {report.status_counts()}, {report.timeseries.height} samples, "
        f"{report.kv_capacity['kv_tokens'].drop_nulls().len()} KV capacities -> "
        + ", ".join(str(p) for p in report.paths.values())
    )
    return 0
