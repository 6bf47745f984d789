"""Placement speed (targets: 1,000 adapters placed in under 1 s, 5,000 in under 5 s).

Times `adaptwin.placement.place` (every surrogate call included; loading the models and computing the lower
bound excluded) for the proposed greedy and its fast variant on Azure-trace workloads, the median of
``--repeats`` runs, on the trained surrogates of ``--model``. A benchmark, not a test: timings on a shared
machine are noisy. ``--twin`` also times, once, the twin step the stage adds to the proposed methods (repair
and shrink, `adaptwin.placement.shrink.repair_and_shrink`, ``--twin-duration`` simulated s per GPU check),
and the GPUs after it; the lower bound then comes from the dataset, as in the stage.

    .venv/bin/python benchmarks/placement_speed.py [--model llama-3.1-8b-instruct] [--sizes 1000 5000] [--twin]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from adaptwin.io import dumps_json, write_json
from adaptwin.paths import resolve
from adaptwin.placement import make_context, place, workloads

TARGETS_S = {1000: 1.0, 5000: 5.0}


def measure(model: str, sizes: list[int], methods: list[str], repeats: int, data_dir: str,
            models_dir: str | None = None, twin_duration_s: float = 0.0) -> dict:
    """Median placement time per (size, method), with the GPUs used and the surrogate calls made; with
    ``twin_duration_s`` > 0 also the time and GPUs of the twin step on the last placement."""
    data = resolve(data_dir)
    bound = {"dataset_dir": data / "dataset" / model} if twin_duration_s > 0 else {"best_throughput": 1.0}
    context = make_context(model, models_dir=resolve(models_dir) if models_dir else data / "models",
                           calibration_path=data / "calibration" / f"{model}.json",
                           metrics_path=data / "metrics" / "surrogates.json", **bound)
    results = []
    for n in sizes:
        spec = workloads.WorkloadSpec(kind="azure", adapters=n, rank_mix="8-16-32")
        frame = workloads.generate(spec, resolve("../shared"))
        for method in methods:
            times, gpus = [], 0
            for _ in range(repeats):
                ev = context.evaluator
                ev.predict_calls = ev.predict_rows = 0
                t0 = time.perf_counter()
                p = place(frame, context, method)
                times.append(time.perf_counter() - t0)
                gpus = p.num_gpus
            median = statistics.median(times)
            target = TARGETS_S.get(n)
            row = {"adapters": n, "method": method, "median_s": round(median, 4),
                   "min_s": round(min(times), 4), "gpus": gpus, "predict_calls": ev.predict_calls,
                   "predict_rows": ev.predict_rows, "target_s": target,
                   "meets_target": None if target is None else median <= target}
            if twin_duration_s > 0:
                row |= twin_step(p, frame, context, method, twin_duration_s)
            results.append(row)
    return {"model": model, "workload": "azure conv x1, ranks 8-16-32", "repeats": repeats, "results": results}


def twin_step(p, frame, context, method: str, duration_s: float) -> dict:
    """Wall time and GPUs of the stage's twin step (repair and shrink) on placement ``p``."""
    from adaptwin.placement.shrink import repair_and_shrink

    t0 = time.perf_counter()
    out = repair_and_shrink(p, lambda keep: place(frame, context, method, keep_whole=keep), context.evaluator,
                            context.evaluator.calibration, duration_s)
    return {"twin_s": round(time.perf_counter() - t0, 2), "gpus_after_twin": out.num_gpus,
            "lower_bound_gpus": out.lower_bound_gpus}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3.1-8b-instruct")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--methods", nargs="+", default=["greedy", "greedy-fast"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--models-dir", default=None, help="surrogates folder (default: <data-dir>/models)")
    parser.add_argument("--twin", action="store_true", help="also time the twin repair and shrink once")
    parser.add_argument("--twin-duration", type=float, default=1200.0, help="simulated s per GPU twin check")
    parser.add_argument("--out", default=None, help="also write the JSON here (e.g. data/metrics/placement_speed.json)")
    args = parser.parse_args(argv)
    report = measure(args.model, args.sizes, args.methods, args.repeats, args.data_dir, args.models_dir,
                     args.twin_duration if args.twin else 0.0)
    print(dumps_json(report), end="")
    if args.out:
        write_json(resolve(args.out), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
