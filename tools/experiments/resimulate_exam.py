"""Experiment (not part of the pipeline): score two pipelines' surrogates on the same GPUs under the second twin.

`cross_exam.py` scores each surrogate on each pipeline's exams, but each exam's truth comes from its own twin,
and the fresh set's rates are drawn relative to its own calibration. This takes pipeline A's exams (fresh set,
placement groups), re-simulates every GPU with pipeline B's calibration and twin code (run it with B's
``lib`` on PYTHONPATH), and scores A's and B's surrogates on A's truth and on B's: the same GPUs, two twins.
It lists the GPUs whose verdict B's surrogate gets wrong under B's twin, with each twin's throughput / ideal.

    PYTHONPATH=<B>/lib <B>/.venv/bin/python tools/experiments/resimulate_exam.py DATA_A DATA_B [--model M] [--draws N]

Outcome (2026-12-03, Llama-3.1-8B; A = main at 0bedeb9, registry copy off; B = the registry copy on
(`calibration.registry_copy_s: 1.8e-7`) with the starvation verdict judged on the arrived tokens too; throughput
SMAPE % / starvation macro-F1):

| exam of A | truth | surrogate A | surrogate B |
|---|---|---|---|
| fresh set (100 GPUs) | twin A | 3.45 / 0.978 | 3.99 / 0.946 |
| fresh set | twin B | 4.43 / 0.978 | 3.91 / 0.946 |
| placement groups (120 GPUs) | twin A | 1.75 / 0.976 | 3.36 / 0.770 |
| placement groups | twin B | 2.75 / 0.730 | 2.61 / 0.907 |

On the same GPUs, B's surrogate is further from B's twin than A's from A's, so the copy-on surrogates' misses
are not only a re-drawn exam. All eight of B's wrong group verdicts are GPUs at 0.88-0.90 x ideal under twin
B (0.91-0.96 under twin A): the copy slows A's placement groups onto the 0.9 bar, where one draw of the twin
decides the label (`validation_seeds.py`: the same holds for real runs near saturation).

With ``--draws 3`` (twin B's labels on the mean of 3 seeds against 0.9 x ideal), surrogate B scores 4.14 % /
0.946 on the fresh set and 2.52 % / 0.942 on the groups: label noise is part of the groups' F1 gap, not all
of it. The five GPUs still wrong are all S_max 32 without swapping (served = A_max = 10-46) at 0.88-0.90 x
ideal: four starved ones that surrogate B calls not starved (probability 0.33-0.49), and one at 0.901 that it
calls starved (0.60).
"""

from __future__ import annotations

import argparse
import json
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import polars as pl
from cross_exam import exams

from adaptwin.calibration.costs import Calibration, load_calibration
from adaptwin.surrogate.evaluate import headline, score, twin_set
from adaptwin.surrogate.model import load
from adaptwin.twin import simulate
from adaptwin.validation.runs import mean_result

_CALIBRATION: Calibration | None = None


def _init(path: str) -> None:
    global _CALIBRATION
    _CALIBRATION = load_calibration(path)


def _simulate(job: tuple[str, int]) -> dict[str, Any]:
    scenario = json.loads(job[0])
    scenario["seed"] = scenario.get("seed", 0) + job[1]
    return simulate(scenario, _CALIBRATION)


def resimulate(exam: pl.DataFrame, calibration_path: Path, draws: int = 1, workers: int = 2) -> pl.DataFrame:
    """The exam with its result columns replaced by the twin's output under ``calibration_path``: with
    ``draws`` > 1, the mean over seeds seed .. seed + draws - 1, labelled on the mean throughput as the twin
    validation does (`adaptwin.validation.runs.mean_result`)."""
    jobs = [(js, i) for js in exam["scenario_json"].to_list() for i in range(draws)]
    with Pool(workers, initializer=_init, initargs=(str(calibration_path),)) as pool:
        flat = pool.map(_simulate, jobs)
    results = [flat[j] if draws == 1 else mean_result(flat[j:j + draws]) for j in range(0, len(flat), draws)]
    return with_results(exam, results)


def with_results(exam: pl.DataFrame, results: list[dict[str, Any]]) -> pl.DataFrame:
    """``exam`` with its twin output columns replaced by ``results`` (one per row)."""
    cols = [c for c in exam.columns if c in results[0] and c != "wall_time_s"]
    return exam.with_columns([pl.Series(c, [r[c] for r in results]).cast(exam[c].dtype, strict=False)
                              for c in cols])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs=2, help="the data folders of pipelines A and B")
    parser.add_argument("--model", default="llama-3.1-8b-instruct")
    parser.add_argument("--draws", type=int, default=1, help="twin B draws per GPU, labels on their mean")
    args = parser.parse_args()
    a, b = args.data
    surrogates = {"A": load(args.model, a / "models"), "B": load(args.model, b / "models")}
    pl.Config.set_tbl_rows(60)
    pl.Config.set_tbl_cols(20)
    for name, exam in exams(a, args.model).items():
        twins = {"A": exam, "B": resimulate(exam, b / "calibration" / f"{args.model}.json", args.draws)}
        for truth, frame in twins.items():
            for label, surrogate in surrogates.items():
                h = headline(score(surrogate.predict, twin_set(frame, name)))
                print(f"{name} of A ({exam.height} GPUs), twin {truth}, surrogate {label}: "
                      f"throughput {h['throughput_smape_pct']:.2f} %, F1 {h['starvation_macro_f1']:.3f}")
        data = twin_set(twins["B"], name)
        p_b = surrogates["B"].predict(data.features)["starvation_probability"]
        wrong = data.features.select("served_adapters", "adapter_slots", "sum_rate", "max_size").with_columns(
            ratio_twin_a=(exam["total_throughput"] / exam["ideal_throughput"]).round(3),
            ratio_twin_b=(twins["B"]["total_throughput"] / twins["B"]["ideal_throughput"]).round(3),
            starved_twin_b=twins["B"]["starved"], p_starved_b=p_b.round(3),
        ).filter((pl.col("p_starved_b") > 0.5) != pl.col("starved_twin_b"))
        print(f"{name}: GPUs whose verdict surrogate B gets wrong under twin B")
        print(wrong.sort("served_adapters"))


if __name__ == "__main__":
    main()
