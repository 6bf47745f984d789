"""``adaptwin ingest [--source DIR] [--out DIR]``: run the ingest and print runs per family and status.

The tables are written into a temporary folder beside ``--out`` and renamed into place together
(`adaptwin.io.atomic_dir`): an interrupt leaves the previous complete set, never a mix of old and new tables.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from adaptwin.errors import UsageError, user_mistakes_exit_2
from adaptwin.layout import Layout
from adaptwin.params import load_params
from adaptwin.paths import from_cwd, resolve

#: files of a previous ingest output (older outputs have no manifest)
OUTPUT_NAMES = r"[a-z_]+\.parquet"


def default_source() -> str:
    """``<paths.shared>/vllm-measurements`` from params.yaml, resolved against the repository root."""
    return str(resolve(load_params()["paths"]["shared"]) / "vllm-measurements")


@user_mistakes_exit_2("ingest")
def run_ingest(args: argparse.Namespace) -> int:
    """Ingest ``args.source`` (default from params.yaml) into ``args.out``; 0 on success, 2 on a bad source or
    output folder. Command-line paths are relative to the current folder; defaults are the repository's."""
    from adaptwin.io import atomic_dir, check_output_dir
    from adaptwin.measurements.corpus import IngestWarning, ingest

    source = from_cwd(args.source) if args.source else resolve(default_source())
    out = from_cwd(args.out) if args.out else Layout.default().measurements()
    if not source.is_dir():
        raise UsageError(f"--source: {source}: not a folder (expected the vllm-measurements folder)")
    check_output_dir(out, OUTPUT_NAMES)
    with warnings.catch_warnings(), atomic_dir(out, OUTPUT_NAMES) as tmp:
        warnings.simplefilter("ignore", IngestWarning)  # listed below instead, once each
        report = ingest(source, tmp, progress=True)
    report.out_dir = out
    print(f"ingested {source} -> {out}; runs per family and status:")
    print(report.format())
    for message in report.warnings:
        print(f"warning: {message}", file=sys.stderr)
    return 0
