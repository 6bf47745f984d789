"""``adaptwin ingest [--source DIR] [--out DIR]``: run the ingest and print runs per family and status."""

from __future__ import annotations

import argparse
import sys
import warnings

from adaptwin.params import load_params
from adaptwin.paths import resolve


def default_source() -> str:
    """``<paths.shared>/vllm-measurements`` from params.yaml, resolved against the repository root."""
    return str(resolve(load_params()["paths"]["shared"]) / "vllm-measurements")


def run_ingest(args: argparse.Namespace) -> int:
    """Ingest ``args.source`` (default from params.yaml) into ``args.out``; 0 on success, 2 on a bad source."""
    from adaptwin.measurements.corpus import IngestWarning, ingest

    source = resolve(args.source) if args.source else resolve(default_source())
    out = resolve(args.out)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IngestWarning)  # listed below instead, once each
            report = ingest(source, out)
    except FileNotFoundError as exc:
        print(f"adaptwin ingest: {exc}", file=sys.stderr)
        return 2
    print(f"ingested {source.resolve()}")
    print(report.format())
    for message in report.warnings:
        print(f"warning: {message}", file=sys.stderr)
    return 0
