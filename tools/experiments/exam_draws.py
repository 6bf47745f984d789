"""Experiment (not part of the pipeline): how much of a surrogate's exam score is the twin's draw?

The surrogate stage scores each surrogate against one twin run per exam GPU (the fresh heterogeneous set, the
placement groups). A surrogate predicts the twin's expected outcome; one run of the twin adds its own noise:
Poisson arrivals on light GPUs, and above all the unpredictable arrivals, whose rates walk up or down by 1.5x
every 300 s, so that one hour realises anywhere from 0.6x to 1.9x the nominal load. This re-simulates every
exam GPU of one finished pipeline with seeds seed + 1 .. seed + N - 1 (draw 0 is the swept truth, reused), and
scores the pipeline's surrogate on each draw alone and on the mean of the draws (labelled on the mean
throughput, as the twin validation does: `adaptwin.validation.runs.mean_result`).

    PYTHONPATH=lib .venv/bin/python tools/experiments/exam_draws.py DATA [--model M ...] [--draws N]

Outcome (2026-12-03, Llama-3.1-8B, the unpredictable half of the fresh set, 4 draws; throughput SMAPE %):
main's surrogate scores 5.2 on the swept draw, 12.9 / 9.0 / 9.0 on the next three and 4.7 on their mean; the
registry-copy pipeline's 13.2 / 12.2 / 13.9 / 8.8 and 8.2. See the closing note for the full table.
"""

from __future__ import annotations

import argparse
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from cross_exam import MODELS, exams
from resimulate_exam import _init, _simulate, with_results

from adaptwin.rules import is_starved
from adaptwin.surrogate.evaluate import headline, score, twin_set
from adaptwin.surrogate.model import load
from adaptwin.validation.runs import mean_result


def draws_of(exam: pl.DataFrame, calibration: Path, draws: int, workers: int = 2) -> list[list[dict[str, Any]]]:
    """Per exam row, its twin results at seed offsets 1 .. draws - 1."""
    scenarios = exam["scenario_json"].to_list()
    jobs = [(s, i) for s in scenarios for i in range(1, draws)]
    with Pool(workers, initializer=_init, initargs=(str(calibration),)) as pool:
        flat = pool.map(_simulate, jobs)
    per = draws - 1
    return [flat[j * per:(j + 1) * per] for j in range(len(scenarios))]


def relabel(result: dict[str, Any]) -> dict[str, Any]:
    """The mean of draws judged as the twin judges one draw: on the tokens that arrived when fewer than the
    ideal (`adaptwin.rules.starvation_bar`, where the twin reports them)."""
    offered = result.get("offered_throughput")
    if offered is not None and not result.get("memory_error") and result.get("total_throughput") is not None:
        bar = min(result["ideal_throughput"], offered)
        result["starved"] = is_starved(result["total_throughput"], bar)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the data folder of a finished pipeline")
    parser.add_argument("--model", action="append", help="models (default: both)")
    parser.add_argument("--draws", type=int, default=4, help="twin runs per GPU, the swept one included")
    args = parser.parse_args()
    for model in args.model or MODELS:
        surrogate = load(model, args.data / "models")
        calibration = args.data / "calibration" / f"{model}.json"
        for name, exam in exams(args.data, model).items():
            extra = draws_of(exam, calibration, args.draws)
            keys = list(extra[0][0])
            swept = [{k: row.get(k) for k in keys} for row in exam.to_dicts()]
            frames = [exam] + [with_results(exam, [row[i] for row in extra]) for i in range(args.draws - 1)]
            mean = with_results(exam, [relabel(mean_result([s, *e])) for s, e in zip(swept, extra, strict=True)])
            for label, frame in [*((f"draw {i}", f) for i, f in enumerate(frames)), ("mean", mean)]:
                for kind in ("all", "poisson", "unpredictable"):
                    rows = frame if kind == "all" else frame.filter(pl.col("arrivals") == kind)
                    if rows.height == 0:
                        continue
                    h = headline(score(surrogate.predict, twin_set(rows, name)))
                    print(f"{model} {name} {kind} ({rows.height} GPUs) {label}: throughput "
                          f"{h['throughput_smape_pct']:.2f} %, F1 {h['starvation_macro_f1']:.3f}")
            tp = np.array([f["total_throughput"].to_numpy() for f in frames], dtype=float)
            verdicts = np.array([f["starved"].to_numpy() for f in frames])
            cv = tp.std(0) / np.maximum(tp.mean(0), 1e-9)
            print(f"{model} {name}: a GPU's throughput over draws varies by {np.nanmedian(cv):.3f} (median "
                  f"coefficient of variation; 90th percentile {np.nanpercentile(cv, 90):.3f}); the verdict "
                  f"differs between draws on {int((verdicts != verdicts[0]).any(0).sum())} of {exam.height} GPUs")


if __name__ == "__main__":
    main()
