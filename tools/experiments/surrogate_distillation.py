"""Experiment (not part of the pipeline): how closely does a surrogate reproduce its teacher, the twin, on the
questions placement asks? Serial (one core), every sweep resumable under ``--work``.

1. training data: the default design of the dataset stage (real-run grid + ``--random`` random scenarios +
   ``--variants`` grid variants), plus ``--mix`` placement-shaped scenarios (`adaptwin.dataset.mixes`,
   training popularity laws), all at ``--duration`` simulated seconds;
2. a CatBoost surrogate set trained on them (``--no-physics``: the earlier feature set);
3. scored against the twin on a fresh heterogeneous set (``--fresh`` scenarios, Pareto popularity, a law the
   training never drew, seed ``--fresh-seed``) and on the GPU groups the placement methods build on the default
   workload grid with this surrogate (``--groups`` of them, re-simulated by the twin).

    PYTHONPATH=lib .venv/bin/python tools/experiments/surrogate_distillation.py --work /tmp/sur \\
        --mix 0 --no-physics                      # the surrogate as it was
    PYTHONPATH=lib .venv/bin/python tools/experiments/surrogate_distillation.py --work /tmp/sur --mix 1200

``--work`` must hold ``data/calibration/<model>.json`` (notebook 02, or `adaptwin.calibration.fit.calibrate`).
Prints one JSON object: throughput SMAPE and starvation macro-F1 per set, and the breakdown by A_max and load.
``--groups 0`` skips building placement groups; ``--also DIR`` scores a swept set as it is (so two surrogates are
compared on the same groups).

Outcome (2026-12-02, Llama-3.1-8B, 600 s windows, serial on a shared 2-core machine; fresh set: 200 scenarios,
seed 1, Pareto popularity; placement groups: the 150 GPUs the methods built with the first surrogate):

| surrogate | training rows | fresh SMAPE / F1 | placement groups SMAPE / F1 |
|---|---|---|---|
| as it was (``--mix 0 --no-physics``) | 258 | 9.26 % / 0.868 | 4.87 % / 0.705 |
| ``--mix 600 --no-physics`` | 858 | 6.98 % / 0.917 | 3.97 % / 0.868 |
| ``--mix 600`` (physics features) | 858 | 6.35 % / 0.928 | 2.89 % / 0.925 |

The twin against itself reseeded on the same fresh set: 4.86 % / 0.950 (`twin_noise_floor.py`).

Placing the default grid with the second surrogate took over 8 minutes (the greedy's bracketing dominates; the
first took about 1.5), so its own groups were not measured.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import polars as pl

from adaptwin.calibration.costs import load_calibration
from adaptwin.dataset.mixes import TEST_LAWS, TRAIN_LAWS, mix_scenarios
from adaptwin.dataset.sampler import SamplerConfig
from adaptwin.dataset.stage import DatasetKnobs, scenarios_for
from adaptwin.params import load_params
from adaptwin.placement.groups import placement_group_scenarios
from adaptwin.surrogate.evaluate import breakdown, headline, score, twin_set
from adaptwin.surrogate.train import train_surrogates
from adaptwin.sweep import load_dataset, run_sweep


def sweep(scenarios: list[dict[str, Any]], out_dir: Path, calibration: Any) -> pl.DataFrame:
    """Twin rows of ``scenarios`` (resumed from ``out_dir``), serially."""
    report = run_sweep(scenarios, out_dir, calibration=calibration, engine="serial", chunk_size=100, progress=False)
    print(f"# {out_dir}: {report.evaluated} simulated in {report.wall_time_s:.1f} s, {report.skipped} resumed",
          flush=True)
    return load_dataset(out_dir)


def training_rows(args: argparse.Namespace, calibration: Any) -> pl.DataFrame:
    """The default design plus ``--mix`` placement-shaped scenarios, swept."""
    knobs = DatasetKnobs(n_scenarios=args.random, duration_s=args.duration, grid_variants=args.variants, seed=0)
    frames = [sweep(scenarios_for(args.model, knobs, calibration), args.work / "data" / "dataset_base" / args.model, calibration)]
    if args.mix:
        config = SamplerConfig(args.model, duration_s=args.duration)
        mixes = mix_scenarios(config, args.mix, seed=0, laws=TRAIN_LAWS, calibration=calibration)
        frames.append(sweep(mixes, args.work / "data" / "train_mix" / args.model, calibration))
    return pl.concat(frames, how="vertical_relaxed").unique("scenario_id").sort("scenario_id")


def scores(surrogate: Any, frame: pl.DataFrame, name: str) -> tuple[dict[str, Any], pl.DataFrame]:
    """Headline metrics and the by-A_max / by-load breakdown of ``surrogate`` on twin rows ``frame``."""
    data = twin_set(frame, name)
    return headline(score(surrogate.predict, data)), breakdown(surrogate.predict, data, surrogate.calibration)


def placement_scores(args: argparse.Namespace, surrogate: Any, rows: pl.DataFrame,
                     calibration: Any) -> tuple[dict[str, Any], pl.DataFrame]:
    """Scores on the GPU groups the placement methods build with ``surrogate`` on the default workload grid."""
    from adaptwin.placement.api import make_context

    grid = load_params()["placement"]["grid"]
    best = float(rows.filter(~pl.col("starved"))["total_throughput"].max())
    context = make_context(args.model, predictor=surrogate, calibration=calibration, margin=0.05,
                           load_headroom=0.05, best_throughput=best)
    methods = ("greedy", "greedy-fast", "loraserve", "dlora", "ffd", "round-robin")
    groups = placement_group_scenarios(context, grid, args.shared, methods, args.duration, limit=args.groups)
    return scores(surrogate, sweep(groups, args.work / "data" / "groups" / args.model, calibration), "placement")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="llama-3.1-8b-instruct")
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--random", type=int, default=40)
    parser.add_argument("--variants", type=int, default=80)
    parser.add_argument("--mix", type=int, default=0)
    parser.add_argument("--no-physics", dest="physics", action="store_false")
    parser.add_argument("--n-search", type=int, default=6)
    parser.add_argument("--fresh", type=int, default=200)
    parser.add_argument("--fresh-seed", type=int, default=1)
    parser.add_argument("--groups", type=int, default=150)
    parser.add_argument("--shared", type=Path, default=Path("/work/shared"))
    parser.add_argument("--save", type=Path, default=None, help="write the trained surrogate here (load(model, DIR))")
    parser.add_argument("--also", type=Path, nargs="*", default=[],
                        help="swept directories scored as they are (e.g. another surrogate's placement groups)")
    args = parser.parse_args()
    calibration = load_calibration(args.work / "data" / "calibration" / f"{args.model}.json")
    start = time.perf_counter()
    rows = training_rows(args, calibration)
    result = train_surrogates(rows, args.model, calibration=calibration, n_search=args.n_search, threads=1,
                              throughput_transform="log_ratio", physics=args.physics, test_fraction=0.1)
    surrogate = result.surrogate
    if args.save is not None:
        from adaptwin.surrogate.train import save

        save(surrogate, args.save / args.model)
    fresh = mix_scenarios(SamplerConfig(args.model, duration_s=args.duration), args.fresh, seed=args.fresh_seed,
                          laws=TEST_LAWS, calibration=calibration)
    out: dict[str, Any] = {"train_rows": result.data.frame.height, "physics": args.physics,
                           "features": len(surrogate.feature_names)}
    out["fresh"], by_fresh = scores(surrogate, sweep(fresh, args.work / "data" / "fresh" / args.model, calibration), "fresh")
    print("# fresh", json.dumps(out["fresh"]), flush=True)
    for directory in args.also:
        out[f"also:{directory}"], _ = scores(surrogate, load_dataset(directory), str(directory))
        print(f"# also {directory}", json.dumps(out[f"also:{directory}"]), flush=True)
    if args.groups > 0:
        out["placement"], by_groups = placement_scores(args, surrogate, rows, calibration)
        by_fresh = pl.concat([by_fresh, by_groups])
    out["wall_s"] = round(time.perf_counter() - start, 1)
    out["breakdown"] = by_fresh.to_dicts()
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
