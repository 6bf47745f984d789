"""Experiment (not part of the pipeline): how far is the twin from itself? The fresh heterogeneous set of
`surrogate_distillation.py` (Pareto popularity, seed 1) simulated again with every scenario's random seed moved by
one: the throughput SMAPE and verdict agreement between the two runs are the floor under any surrogate's error
against the twin at this window (a surrogate learns the mean, the twin answers with one draw).

    PYTHONPATH=lib .venv/bin/python tools/experiments/twin_noise_floor.py --work /tmp/sur [--n 200 --duration 600]

Outcome (2026-12-02, Llama-3.1-8B, 200 scenarios at 600 s): the twin against itself reseeded gives 4.86 %
throughput SMAPE and starvation macro-F1 0.950 (95 % agreement). A perfect surrogate of the twin's mean would
still be about 4.9 / sqrt(2) = 3.4 % from one draw, so the 4 % / 0.97 distillation targets leave little room at
600 s windows; longer windows lower this floor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from adaptwin.calibration.costs import load_calibration
from adaptwin.dataset.mixes import TEST_LAWS, mix_scenarios
from adaptwin.dataset.sampler import SamplerConfig
from adaptwin.surrogate.evaluate import classification_metrics, smape_pct
from adaptwin.sweep import load_dataset, run_sweep
from adaptwin.twin.scenario import scenario_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="llama-3.1-8b-instruct")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--duration", type=float, default=600.0)
    args = parser.parse_args()
    calibration = load_calibration(args.work / "data" / "calibration" / f"{args.model}.json")
    first = mix_scenarios(SamplerConfig(args.model, duration_s=args.duration), args.n, seed=1, laws=TEST_LAWS,
                          calibration=calibration)
    second = [{**s, "seed": s["seed"] + 1} for s in first]
    frames = []
    for name, scenarios in (("fresh", first), ("fresh_reseeded", second)):
        out = args.work / "data" / name / args.model
        run_sweep(scenarios, out, calibration=calibration, engine="serial", chunk_size=100, progress=False)
        ids = pl.DataFrame({"scenario_id": [scenario_id(s) for s in scenarios], "pair": range(len(scenarios))})
        frames.append(load_dataset(out).join(ids, on="scenario_id").filter(~pl.col("memory_error")))
    both = frames[0].join(frames[1], on="pair", suffix="_again")
    print(json.dumps({
        "n": both.height,
        "throughput_smape_pct": smape_pct(both["total_throughput"].to_numpy(), both["total_throughput_again"].to_numpy()),
        "starvation_macro_f1": classification_metrics(both["starved"].to_numpy(), both["starved_again"].to_numpy())["macro_f1"],
        "starvation_agreement": float((both["starved"] == both["starved_again"]).mean()),
    }, indent=1))


if __name__ == "__main__":
    main()
