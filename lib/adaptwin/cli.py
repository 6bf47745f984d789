"""The ``adaptwin`` command line. Argument names here are contracts used by other tools; the work is done by
the module each sub-command names (imported lazily, so ``adaptwin --help`` stays fast)."""

from __future__ import annotations

import argparse
import importlib
import sys

PLACEMENT_METHODS = ["greedy", "greedy-fast", "greedy-latency", "loraserve", "dlora", "ffd", "round-robin"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptwin", description="Serve many LoRA adapters on few GPUs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest the recorded vLLM measurements into Parquet tables")
    p.add_argument("--source", default=None, help="the vllm-measurements folder (default: params.yaml)")
    p.add_argument("--out", default="data/measurements", help="output folder for the tables")
    p.set_defaults(target="adaptwin.measurements.cli:run_ingest")

    p = sub.add_parser("profile", help="measure a real vLLM server (needs a GPU and `pip install .[gpu]`)")
    p.add_argument("config", help="YAML file describing the profiling runs")
    p.add_argument("--out", default="data/measurements", help="output folder for the tables")
    p.set_defaults(target="adaptwin.profiling.cli:run_profile")

    p = sub.add_parser("simulate", help="simulate one vLLM server with the digital twin; prints one JSON object")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--calibration", default=None, help="calibration JSON (default: data/calibration/<model>.json)")
    p.add_argument("--json", action="store_true", help="print compact single-line JSON")
    p.set_defaults(target="adaptwin.twin.cli:run_simulate")

    p = sub.add_parser("place", help="place a workload of adapters on the fewest GPUs")
    p.add_argument("workload", help="CSV with columns adapter_id,rank,rate")
    p.add_argument("--model", required=True)
    p.add_argument("--method", default="greedy", choices=PLACEMENT_METHODS)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--models-dir", default=None, help="surrogate models folder (default: data/models)")
    p.add_argument("--calibration", default=None, help="calibration JSON (default: data/calibration/<model>.json)")
    p.add_argument("--repair", action="store_true",
                   help="check every GPU with the twin, repair the ones it fails, then shrink to the fewest GPUs "
                        "the twin passes (slower: seconds of simulation)")
    p.set_defaults(target="adaptwin.placement.cli:run_place")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and hand over to the module that does the work."""
    args = _build_parser().parse_args(argv)
    module_name, func_name = args.target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
