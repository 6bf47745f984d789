"""Experiment (not part of the pipeline): how much does a shorter simulated window move the twin's answer on
placement-shaped GPUs? The same mix draws (`adaptwin.dataset.mixes`, training laws, seed 7) simulated over
3,600, 1,200 and 600 s; throughput SMAPE and starvation agreement of the shorter windows against the hour,
and twin CPU seconds per scenario. Serial, resumable under ``--work``.

    PYTHONPATH=lib .venv/bin/python tools/experiments/mix_window_bias.py --work /tmp/sur [--n 24]

``--work`` must hold ``data/calibration/<model>.json``.

Outcome (2026-12-02, Llama-3.1-8B, 24 draws, 8 starved at 3,600 s; shared 2-core machine): against the hour,
1,200 s windows give 6.0 % throughput SMAPE (5.7 % on GPUs that are not starved) and 87.5 % verdict agreement at
0.64 CPU-s per scenario; 600 s windows 10.3 % (10.6 %) and 91.7 % at 0.21 CPU-s; the hour costs 1.31 CPU-s.
Even starvation-free GPUs move by ~10 % at 600 s (few requests per adapter, requests still running at the end
dropped), so a 600 s dataset is not the hour's twin: the default keeps 3,600 s.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from adaptwin.calibration.costs import load_calibration
from adaptwin.dataset.mixes import mix_scenarios
from adaptwin.dataset.sampler import SamplerConfig
from adaptwin.surrogate.evaluate import smape_pct
from adaptwin.sweep import load_dataset, run_sweep
from adaptwin.twin.scenario import scenario_id

WINDOWS = (3600, 1200, 600)


def swept(model: str, window: int, n: int, work: Path, calibration) -> pl.DataFrame:
    """The ``n`` draws at ``window`` seconds, in draw order (column ``pair``)."""
    scenarios = mix_scenarios(SamplerConfig(model, duration_s=window), n, seed=7, calibration=calibration)
    out = work / "data" / "window" / str(window)
    run_sweep(scenarios, out, calibration=calibration, engine="serial", chunk_size=n, progress=False)
    ids = pl.DataFrame({"scenario_id": [scenario_id(s) for s in scenarios], "pair": range(len(scenarios))})
    return load_dataset(out).join(ids, on="scenario_id").sort("pair")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="llama-3.1-8b-instruct")
    parser.add_argument("--n", type=int, default=24)
    args = parser.parse_args()
    calibration = load_calibration(args.work / "data" / "calibration" / f"{args.model}.json")
    frames = {w: swept(args.model, w, args.n, args.work, calibration) for w in WINDOWS}
    hour = frames[3600]
    out = {"3600": {"cpu_s_per_scenario": float(hour["sweep_wall_time_s"].mean()), "n": hour.height,
                    "starved": int(hour["starved"].sum())}}
    ok = ~hour["starved"].to_numpy()
    for w in WINDOWS[1:]:
        f = frames[w]
        a, b = hour["total_throughput"].to_numpy(), f["total_throughput"].to_numpy()
        out[str(w)] = {"throughput_smape_pct": smape_pct(a, b), "throughput_smape_pct_not_starved": smape_pct(a[ok], b[ok]),
                       "throughput_smape_pct_starved": smape_pct(a[~ok], b[~ok]),
                       "starvation_agreement": float((hour["starved"] == f["starved"]).mean()),
                       "cpu_s_per_scenario": float(f["sweep_wall_time_s"].mean())}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
