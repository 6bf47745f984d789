"""The ``adaptwin`` command line. Argument names here are contracts used by other tools; the work is done by
the module each sub-command names (imported lazily, so ``adaptwin --help`` stays fast).

Error contract (every sub-command): a mistake the user can fix (bad file, field or value) exits 2 with one
line on stderr naming the file, the field and the value; anything else exits 1 with a short message and a
hint; an interrupt exits 130. Never a traceback, unless ``ADAPTWIN_DEBUG=1`` asks for one.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import textwrap
from collections.abc import Iterator

from adaptwin.errors import InputError, UsageError, one_line

PATHS_HELP = ("Paths given on the command line are relative to the current folder; paths inside a scenario "
              "file are relative to that file's folder; defaults (data/...) are the repository's.")

SCENARIO_HELP = """\
A scenario file (YAML) describes one vLLM server and its load:

  model: llama-3.1-8b-instruct          # data/calibration/<model>.json unless --calibration is given
  server:
    max_loras: 32                       # A_max, adapters resident on the GPU
    max_cpu_loras: 128                  # adapters held in CPU memory (>= served adapters)
    max_lora_rank: 16                   # S_max: a rank vLLM 0.8.5 accepts (8 16 32 64 128 256 320 512)
    max_num_seqs: 2048                  # optional (vLLM default 256)
    max_num_batched_tokens: 2048        # optional (vLLM default 2048)
  adapters:                             # groups {count, rank, rate in requests/s};
    - {count: 64, rank: 8, rate: 0.1}   #   or {ranks: [...], rates: [...]}
    - {count: 64, rank: 16, rate: 0.05} #   or instead `adapters_csv: adapters.csv` (adapter_id,rank,rate)
  arrivals: {kind: poisson}             # poisson | unpredictable (period_s, sigma) | trace (path, mapping, speedup)
  lengths: {kind: sharegpt}             # sharegpt (input_mean, output_mean, shape) | fixed (input, output) | trace (path)
  duration_s: 600                       # simulated seconds
  seed: 0
  client: {max_connections: 28232, time_wait_s: 60, metrics_poll_s: 2.0}
                                        # optional: the benchmark client's port limit and /metrics poller

Relative paths in the file (adapters_csv, trace paths) are relative to the file's folder.
Output: one JSON object; throughputs in tokens/s (total_throughput, ideal_throughput = offered load),
latencies in ms (ttft_*_ms, itl_*_ms), wall_time_s in seconds; starved and memory_error are booleans.
"""

PLACE_HELP = """\
By default the placement is verified by the digital twin: the surrogate proposes, the twin simulates every
GPU (seconds to minutes), GPUs it fails are repaired, and the placement is shrunk to the fewest GPUs the
twin passes. placement.json records each GPU's twin verdict (throughput / offered load, mean TTFT and ITL,
starved, memory error, seed and simulated window). --fast skips the twin: the surrogate's answer, marked
unverified. The output folder is written whole or not at all.
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("adaptwin")
    except PackageNotFoundError:
        from adaptwin import __version__

        return __version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptwin", description="Serve many LoRA adapters on few GPUs.",
                                     epilog=PATHS_HELP)
    parser.add_argument("--version", action="version", version=f"adaptwin {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest the recorded vLLM measurements into Parquet tables",
                       epilog=PATHS_HELP)
    p.add_argument("--source", default=None,
                   help="the vllm-measurements folder (default: <paths.shared>/vllm-measurements of params.yaml)")
    p.add_argument("--out", default=None, help="output folder for the tables, replaced whole "
                                               "(default: the repository's data/measurements)")
    p.set_defaults(target="adaptwin.measurements.cli:run_ingest")

    p = sub.add_parser("profile", help="measure a real vLLM server (needs a GPU and `pip install .[gpu]`)",
                       epilog=PATHS_HELP)
    p.add_argument("config", help="YAML file describing the profiling runs")
    p.add_argument("--out", default=None, help="output folder for the tables "
                                               "(default: the repository's data/measurements)")
    p.set_defaults(target="adaptwin.profiling.cli:run_profile")

    p = sub.add_parser("simulate", help="simulate one vLLM server with the digital twin; prints one JSON object",
                       description="Simulate one vLLM server with the digital twin.",
                       epilog=SCENARIO_HELP + "\n" + PATHS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", help="scenario YAML file (format below)")
    p.add_argument("--calibration", default=None,
                   help="calibration JSON (default: the repository's data/calibration/<model>.json)")
    p.add_argument("--json", action="store_true", help="print compact single-line JSON")
    p.add_argument("--extrapolate", action="store_true",
                   help="accept a max_lora_rank beyond the calibrated ranks (costs extrapolated, not measured)")
    p.set_defaults(target="adaptwin.twin.cli:run_simulate")

    p = sub.add_parser("place", help="place a workload of adapters on the fewest GPUs (twin-verified)",
                       description="Place a workload of LoRA adapters on the fewest GPUs.",
                       epilog=PLACE_HELP + "\n" + textwrap.fill(PATHS_HELP, 110),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", help="CSV with columns adapter_id,rank,rate (rate in requests/s)")
    p.add_argument("--model", required=True, help="base model, e.g. llama-3.1-8b-instruct (its calibration and "
                                                   "surrogates are data/calibration/<model>.json, data/models/<model>)")
    p.add_argument("--method", default="greedy", choices=placement_methods())
    p.add_argument("--out", required=True, help="output folder (placement.json, routing.csv, serve_gpu<N>.sh), "
                                                "replaced whole")
    p.add_argument("--models-dir", default=None, help="surrogate models folder (default: the repository's "
                                                      "data/models)")
    p.add_argument("--calibration", default=None,
                   help="calibration JSON (default: the repository's data/calibration/<model>.json)")
    p.add_argument("--fast", action="store_true",
                   help="surrogate only, no twin check: faster, and marked unverified in the output")
    p.add_argument("--repair", action="store_true", help="accepted for old scripts: verification is the default")
    p.add_argument("--extrapolate", action="store_true",
                   help="accept adapter ranks beyond the calibrated ranks (costs extrapolated, not measured)")
    p.add_argument("--workers", type=int, default=2, help="processes for the twin checks (default 2)")
    p.set_defaults(target="adaptwin.placement.cli:run_place")
    return parser


def placement_methods() -> list[str]:
    """The placement methods of the registry (imported when the parser is built, not when adaptwin loads)."""
    from adaptwin.placement.methods import METHODS

    return list(METHODS)


def _prepare_profile(args: argparse.Namespace) -> None:
    """Resolve ``profile``'s paths against the current folder and check its config before anything starts
    (the profiling module reads what it is given)."""
    from adaptwin.layout import Layout
    from adaptwin.paths import from_cwd
    from adaptwin.profiling.config import load_config

    config = from_cwd(args.config)
    if not config.is_file():
        raise UsageError(f"{config}: profiling config not found")
    try:
        load_config(config)
    except ValueError as exc:
        text = one_line(exc)
        raise UsageError(text if str(config) in text else f"{config}: {text}") from None
    args.config = str(config)
    args.out = str(from_cwd(args.out) if args.out else Layout.default().measurements())


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and hand over to the module that does the work, applying the error contract."""
    args = _build_parser().parse_args(argv)
    name = f"adaptwin {args.command}"
    with _terminate_as_interrupt():
        return _run(args, name)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a job scheduler's stop) handled like Ctrl-C while inside, so outputs being written
    are cleaned up the same way (`adaptwin.io.atomic_dir`); the previous handler is restored after."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, name: str) -> int:
    """Hand over to the sub-command and apply the error contract (module docstring)."""
    try:
        if args.command == "profile":
            _prepare_profile(args)
        module_name, func_name = args.target.split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; outputs left as they were", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # noqa: BLE001 - the contract: one line, never a traceback
        if os.environ.get("ADAPTWIN_DEBUG"):
            raise
        if isinstance(exc, InputError):
            print(f"{name}: {one_line(exc)}", file=sys.stderr)
            return 2
        print(f"{name}: internal error: {type(exc).__name__}: {one_line(exc)} (hint: this is a bug or a broken "
              "install, not your input; rerun with ADAPTWIN_DEBUG=1 for the traceback and report it)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
