"""``adaptwin place WORKLOAD.csv --model MODEL [--method ...] --out DIR`` (arguments parsed in adaptwin.cli).

Exit status 0 on success; 2 with one line ``adaptwin place: <file>: row <n>: field <f>: ...`` on a bad workload
or missing model files, so scripts and outside checks can tell what to fix.
"""

from __future__ import annotations

import argparse
import sys

from adaptwin.paths import resolve

#: simulated seconds per GPU in the twin checks of ``--repair`` (the stage's ``placement.repair_duration_s``)
REPAIR_DURATION_S = 1200.0


def run_place(args: argparse.Namespace) -> int:
    """Read and validate the workload, place it, write placement.json, routing.csv and serve_gpu<N>.sh."""
    from adaptwin.placement.api import make_context, max_rank, place
    from adaptwin.placement.core import PlacementError
    from adaptwin.placement.export import write_placement
    from adaptwin.placement.workloads import read_workload
    from adaptwin.twin.costs import CalibrationError, load_calibration

    try:
        calibration_path = resolve(args.calibration or f"data/calibration/{args.model}.json")
        calibration = load_calibration(calibration_path)
        workload = read_workload(resolve(args.workload), max_rank=max_rank(calibration))
        context = make_context(
            args.model, calibration=calibration, models_dir=args.models_dir,
            metrics_path=resolve("data/metrics/surrogates.json"), dataset_dir=resolve(f"data/dataset/{args.model}"),
            twin_bound_s=REPAIR_DURATION_S if args.repair else 0.0,
        )
        placement = place(workload, context, args.method)
        if args.repair:
            from adaptwin.placement.shrink import repair_and_shrink

            placement = repair_and_shrink(placement, lambda keep: place(workload, context, args.method, keep_whole=keep),
                                          context.evaluator, calibration, REPAIR_DURATION_S)
        write_placement(placement, resolve(args.out))
    except (PlacementError, CalibrationError, FileNotFoundError) as exc:
        print(f"adaptwin place: {exc}", file=sys.stderr)
        return 2
    unsafe = placement.notes.get("predicted_unsafe_gpus", 0)
    print(f"{args.method}: {placement.num_gpus} GPUs for {workload.height} adapters "
          f"(lower bound {placement.lower_bound_gpus}, {unsafe} predicted unsafe) in "
          f"{placement.placement_time_s:.3f} s"
          + (f" + twin repair {placement.notes['repair_time_s']:.1f} s" if "repair_time_s" in placement.notes else "")
          + f" -> {args.out}")
    return 0
