"""Experiment (not part of the pipeline): do cheap short-window twin rows teach a surrogate of the hour?

A 600 s window costs the twin about a sixth of the hour's CPU on placement-shaped GPUs, but its targets are
biased against the hour (`mix_window_bias.py`). Trained on both, with the window as a feature
(`adaptwin.surrogate.features.WINDOW_FEATURE`), a surrogate can learn the structure from many short rows and the
hour's level from fewer long ones. This script sweeps (serially, resumable under ``--work``) the training laws'
mixes at 3,600 s and at ``--short-window`` s (the same draws: the first ``--hour`` of one stream), and a fresh
set at 3,600 s (another seed and the Pareto law), then trains one surrogate per condition
``HOUR:SHORT`` (rows of each kind) and prints, per condition, the twin CPU seconds its rows cost and its
throughput SMAPE and starvation macro-F1 against the twin on the fresh set.

    PYTHONPATH=lib .venv/bin/python tools/experiments/surrogate_fidelity.py --work /tmp/fid \\
        --calibration data/calibration/llama-3.1-8b-instruct.json --conditions 200:0 400:0 200:1200

``--uncertain N``: after the conditions, the first condition's surrogate picks N more short-window GPUs by
uncertainty (`adaptwin.surrogate.active`, a pool of 20 N) and is compared with the same condition plus the
next N short draws (random): is uncertainty sampling worth its twin time?

Outcome (2026-12-02, Llama-3.1-8B, fresh set 100, 2-core machine shared with other jobs, ``--transform
log_capacity_ratio``, with the arrival-kind feature), throughput SMAPE vs the twin:

| hour : short rows | twin CPU s (contended wall) | fresh SMAPE |
|---|---|---|
| 200 : 0 | 771 | 6.58 % |
| 400 : 0 | 1,633 | 5.30 % |
| 200 : 1,200 | 1,658 | 5.26 % |
| 400 : 1,200 | 2,520 | 4.95 % |

Before the transform and the arrival-kind feature (``--transform log_ratio``): 200 : 0 gave 14.8 %, 100 : 0
17.7 %; ``log_capacity_ratio`` alone 10.5 % and 11.4 %. Short rows are worth about as much as hour rows per twin
CPU second for throughput, and more for ITL (8.7 % against 9.8 % at equal CPU). ``--conditions 200:600
--uncertain 200``: 200 : 600 gave 4.91 % (F1 0.957); + 200 random short draws 4.21 % (F1 0.957); + 200 picked by
uncertainty 5.00 % (F1 0.936), so uncertainty sampling did not pay on this set. The twin against itself
reseeded on the same fresh set: 3.11 % (`twin_noise_floor.py --n 100 --duration 3600`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from adaptwin.calibration.costs import load_calibration
from adaptwin.dataset.mixes import TEST_LAWS, TRAIN_LAWS, mix_scenarios
from adaptwin.dataset.sampler import SamplerConfig
from adaptwin.surrogate.evaluate import headline, score, twin_set
from adaptwin.surrogate.train import train_surrogates
from adaptwin.sweep import load_dataset, run_sweep
from adaptwin.twin.scenario import scenario_id

HOUR = 3600.0


def swept(scenarios: list[dict], out: Path, calibration) -> pl.DataFrame:
    """The rows of ``scenarios`` (swept into ``out`` unless there already), in draw order."""
    run_sweep(scenarios, out, calibration=calibration, engine="serial", chunk_size=50, progress=False)
    ids = pl.DataFrame({"scenario_id": [scenario_id(s) for s in scenarios], "draw": range(len(scenarios))})
    return load_dataset(out).join(ids, on="scenario_id", maintain_order="left").sort("draw")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--calibration", type=Path, required=True)
    parser.add_argument("--model", default="llama-3.1-8b-instruct")
    parser.add_argument("--short-window", type=float, default=600.0)
    parser.add_argument("--fresh", type=int, default=200)
    parser.add_argument("--conditions", nargs="+", default=["200:0", "400:0", "200:1200"])
    parser.add_argument("--n-search", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1, help="training seeds averaged per condition")
    parser.add_argument("--transform", default="log_ratio", help="throughput transform (surrogate.train.TRANSFORMS)")
    parser.add_argument("--uncertain", type=int, default=0, help="GPUs picked by uncertainty vs as many random")
    args = parser.parse_args()
    calibration = load_calibration(args.calibration)
    wanted = [tuple(int(v) for v in c.split(":")) for c in args.conditions]
    n_hour = max(h for h, _ in wanted)
    n_short = max(max(s for _, s in wanted), wanted[0][1] + args.uncertain)
    fresh = swept(mix_scenarios(SamplerConfig(args.model, duration_s=HOUR), args.fresh, seed=1, laws=TEST_LAWS,
                                calibration=calibration), args.work / "fresh", calibration)
    hour = swept(mix_scenarios(SamplerConfig(args.model, duration_s=HOUR), n_hour, seed=0, laws=TRAIN_LAWS,
                               calibration=calibration), args.work / "hour", calibration)
    short = swept(mix_scenarios(SamplerConfig(args.model, duration_s=args.short_window), n_short, seed=0,
                                laws=TRAIN_LAWS, calibration=calibration), args.work / "short", calibration) \
        if n_short else hour.head(0)
    test = twin_set(fresh, "fresh")

    def scored(rows: pl.DataFrame, label: dict) -> object:
        results, last = [], None
        for seed in range(args.seeds):
            last = train_surrogates(rows, args.model, calibration=calibration, n_search=args.n_search, threads=1,
                                    throughput_transform=args.transform, test_fraction=0.05, seed=seed)
            results.append(headline(score(last.surrogate.predict, test)))
        mean = {k: round(sum(r[k] for r in results) / len(results), 3) for k in results[0]}
        cpu = round(float(rows["sweep_wall_time_s"].sum()), 1)
        print(json.dumps({**label, "transform": args.transform, "twin_cpu_s": cpu, **mean}), flush=True)
        return last

    first = None
    for h, s in wanted:
        result = scored(pl.concat([hour.head(h), short.head(s)], how="vertical_relaxed").drop("draw"),
                        {"hour": h, "short": s})
        first = first or (result, h, s)
    if args.uncertain:
        from adaptwin.surrogate.active import active_round

        result, h, s = first
        base = pl.concat([hour.head(h), short.head(s)], how="vertical_relaxed").drop("draw")
        scored(pl.concat([base, short.drop("draw").slice(s, args.uncertain)], how="vertical_relaxed"),
               {"hour": h, "short": s, "random_short": args.uncertain})
        picked, record = active_round(result.surrogate, args.uncertain, 20, args.short_window, seed=1000,
                                      out_dir=args.work / "uncertain")
        print(json.dumps(record), flush=True)
        scored(pl.concat([base, picked], how="vertical_relaxed"), {"hour": h, "short": s, "uncertain": args.uncertain})


if __name__ == "__main__":
    main()
