"""``adaptwin place WORKLOAD.csv --model MODEL [--method ...] [--fast] --out DIR`` (arguments in adaptwin.cli).

Every input is checked before the surrogate or the twin runs (workload rows, ranks vLLM accepts and the
calibration covers, adapter names, the output folder), so a mistake costs one line, not minutes. The output
folder is built beside ``--out`` and renamed into place (`adaptwin.io.atomic_dir`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from adaptwin.errors import UsageError, user_mistakes_exit_2
from adaptwin.layout import Layout
from adaptwin.paths import from_cwd

#: files of a previous placement output, replaced by a new one (older outputs have no manifest)
OUTPUT_NAMES = r"placement\.json|routing\.csv|serve_gpu\d+\.sh"


@user_mistakes_exit_2("place")
def run_place(args: argparse.Namespace) -> int:
    """Validate the inputs, place (twin-verified unless ``--fast``), write the output folder, print a summary."""
    from adaptwin.io import atomic_dir, check_output_dir

    if args.fast and args.repair:
        raise UsageError("--fast --repair: --repair asks for the twin check that --fast skips; give one of them")
    out = from_cwd(args.out)
    check_output_dir(out, OUTPUT_NAMES)
    calibration = _calibration(args)
    workload = _workload(from_cwd(args.workload), calibration, args.extrapolate)
    placement = _place(args, workload, calibration)
    with atomic_dir(out, OUTPUT_NAMES) as tmp:
        _write(placement, tmp)
    print(summary(placement, workload, args.out))
    for line in warnings_of(placement):
        print(f"adaptwin place: warning: {line}", file=sys.stderr)
    return 0


def _calibration(args: argparse.Namespace) -> Any:
    """The calibration of ``--model`` (or ``--calibration``), refused when it describes another model: the
    twin would judge the GPUs with the wrong costs."""
    from adaptwin.calibration.costs import load_calibration

    path = from_cwd(args.calibration) if args.calibration else Layout.default().calibration(args.model)
    calibration = load_calibration(path)
    if calibration.model != args.model:
        raise UsageError(f"{path}: field model: {calibration.model!r} is not --model {args.model!r}")
    return calibration


def _workload(path: Path, calibration: Any, extrapolate: bool) -> pl.DataFrame:
    """The workload CSV, read and checked against what vLLM and the calibration accept."""
    from adaptwin.placement.api import max_rank
    from adaptwin.placement.workloads import read_workload
    from adaptwin.vllm_limits import adapter_id_problem, calibrated_problem, rank_problem

    if not path.is_file():
        raise UsageError(f"{path}: workload file not found")
    workload = read_workload(path)
    calibrated = max_rank(calibration)
    for line, (adapter_id, rank) in enumerate(workload.select("adapter_id", "rank").iter_rows(), start=2):
        problem = adapter_id_problem(adapter_id)
        field = "adapter_id"
        if problem is None:
            field = "rank"
            problem = rank_problem(rank) or (None if extrapolate else calibrated_problem(rank, calibrated))
        if problem:
            raise UsageError(f"{path}: row {line}: field {field}: {problem}")
    return workload


def _place(args: argparse.Namespace, workload: pl.DataFrame, calibration: Any) -> Any:
    """The placement: surrogate only with ``--fast``, else twin-verified; the context comes from
    `make_context` with the library's own defaults, so the command and ``adaptwin.placement`` agree."""
    from adaptwin.placement import pipeline
    from adaptwin.placement.api import TWIN_DURATION_S, make_context

    models_dir = from_cwd(args.models_dir) if args.models_dir else Layout.default().models()
    if args.models_dir and not models_dir.is_dir():
        raise UsageError(f"--models-dir: {models_dir}: no such folder")
    metadata = models_dir / args.model / "metadata.json"
    if not metadata.is_file():
        raise UsageError(f"{metadata}: not found: no trained surrogate for --model {args.model} "
                         "(run `dvc repro train_surrogates`, or give --models-dir)")
    context = make_context(args.model, calibration=calibration, models_dir=models_dir,
                           twin_bound_s=0.0 if args.fast else TWIN_DURATION_S)
    if args.fast:
        return pipeline.run(workload, context, args.method, pipeline.Options.fast())
    if args.workers < 1:
        raise UsageError(f"--workers: must be >= 1, got {args.workers}")
    with _twin_progress():
        return pipeline.run(workload, context, args.method, pipeline.Options.verified(TWIN_DURATION_S, args.workers))


@contextmanager
def _twin_progress() -> Iterator[None]:
    """A tqdm bar on stderr counting twin runs while inside (shown once the checks last over a second): the
    checks take seconds to minutes, and an operator must see that they advance."""
    from tqdm import tqdm

    from adaptwin.placement import verify

    with tqdm(desc="twin checks", unit=" GPU runs", file=sys.stderr, delay=1.0, leave=False) as bar:
        with verify.progress(bar.update):
            yield


def _write(placement: Any, folder: Path) -> None:
    """placement.json (with the verification block), routing.csv and the serve scripts into ``folder``."""
    from adaptwin.io import write_json
    from adaptwin.placement.export import write_placement

    write_placement(placement, folder)
    write_json(folder / "placement.json", placement_document(placement))


def placement_document(placement: Any) -> dict[str, Any]:
    """``Placement.to_json`` plus ``verification`` (what was checked, how) and each GPU's ``twin`` verdict."""
    doc = placement.to_json()
    notes = placement.notes
    twin = notes.twin
    doc["verification"] = {
        "verified": bool(notes.verified),
        "by": "digital twin" if twin is not None else "surrogate only (--fast): unverified",
        "twin_window_s": notes.twin_window_s,
        "pass_rule": (f"throughput >= {notes.twin_pass_ratio} x offered, not starved, no memory error"
                      if twin is not None else None),
        "gpus_passed": sum(v["passed"] for v in twin) if twin is not None else None,
        "adapter_bound_gpus": notes.adapter_bound_gpus,
        "sanity_bound": notes.sanity_bound,
        "placed_by": notes.fallback_method or placement.method,
    }
    for gpu, verdict in zip(doc["gpus"], twin or [], strict=False):
        gpu["twin"] = verdict
    return doc


def summary(placement: Any, workload: pl.DataFrame, out: str) -> str:
    """The one-line report: GPUs, bound, what was verified and how, time, where the output went."""
    notes = placement.notes
    head = (f"{placement.method}: {placement.num_gpus} GPUs for {workload.height} adapters "
            f"(lower bound {placement.lower_bound_gpus} GPUs)")
    if notes.verified:
        twin = notes.twin
        passed = sum(v["passed"] for v in twin)
        check = (f"twin-verified: {passed} of {len(twin)} GPUs pass (throughput >= {notes.twin_pass_ratio:.0%} "
                 f"of offered, none starved, no memory error; {notes.twin_window_s:.0f} s simulated per GPU)")
        took = (f"placement {placement.placement_time_s:.2f} s + twin {notes.repair_time_s or 0.0:.1f} s")
    else:
        unsafe = notes.predicted_unsafe_gpus or 0
        check = f"UNVERIFIED (--fast: surrogate only, {unsafe} GPUs predicted unsafe)"
        took = f"placement {placement.placement_time_s:.2f} s"
    return f"{head}; {check}; {took} -> {out}"


def warnings_of(placement: Any) -> list[str]:
    """What an operator must know before deploying: GPUs the twin failed, a sanity bound hit."""
    notes, lines = placement.notes, []
    failed = [v for v in notes.twin or [] if not v["passed"]]
    if failed:
        lines.append(f"{len(failed)} GPUs still fail the twin check (see 'twin' in placement.json)")
    if notes.sanity_bound:
        lines.append(str(notes.sanity_bound))
    unsafe = notes.predicted_unsafe_gpus or 0
    if not notes.verified and unsafe:
        lines.append(f"{unsafe} GPUs are predicted unsafe by the surrogate; without --fast the twin checks and "
                     "repairs them")
    return lines
