"""Experiment (not part of the pipeline): is a change of the surrogates' scores the surrogates' or the exam's?

Each `make repro` builds its own exams: the fresh heterogeneous set is drawn relative to the calibration's
capacity (another calibration draws other rates, and other rates give the unpredictable arrivals other
random walks), and the placement groups are GPUs that placement built with that run's own surrogate. So two
pipelines' ``surrogates.json`` compare two surrogates on two different exams. This scores every surrogate on
every exam (the twin's truth of each exam as it was swept), for both sets and every model, and splits the
fresh set by arrival kind (unpredictable arrivals walk every rate up or down by 1.5x each 300 s, which no
predictor of the nominal rates can know).

    PYTHONPATH=lib .venv/bin/python tools/experiments/cross_exam.py DATA_A DATA_B [--model M ...]

DATA_A and DATA_B are the ``data`` folders of two finished pipelines (e.g. two clones after `make repro`).

Outcome (2026-12-03; A = main at a36b8d4, B = A with the twin's starvation verdict judged on the tokens that
arrived as well (`adaptwin.rules.starvation_bar`) and small placement-shaped GPUs holding any subset of the
rank mix; Llama-3.1-8B, throughput SMAPE % / starvation macro-F1):

| exam | surrogate A | surrogate B |
|---|---|---|
| placement groups of A | 1.75 / 0.976 | 2.29 / 0.928 |
| placement groups of B | 1.65 / 0.838 | 2.39 / 0.798 |
| fresh set of A | 3.45 / 0.978 | 3.75 / 0.978 |
| fresh set of B | 3.49 / 0.967 | 3.70 / 0.978 |

B's exam is harder (A's own surrogate drops from 0.976 to 0.838 F1 on it), and B's surrogate is also worse
on both exams; Qwen-2.5-7B's groups likewise (A 1.64 / 1.000 and B 2.90 / 0.850 on A's exam).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import polars as pl

from adaptwin.dataset.stage import fresh_dir
from adaptwin.rules import smape_pct
from adaptwin.surrogate.evaluate import EvalSet, headline, score, twin_set
from adaptwin.surrogate.model import load
from adaptwin.sweep import load_dataset

MODELS = ("llama-3.1-8b-instruct", "qwen-2.5-7b-instruct")


def exams(data: Path, model: str) -> dict[str, pl.DataFrame]:
    """The swept exams of one pipeline: its fresh set and its placement groups (those that exist)."""
    out = {}
    fresh = fresh_dir(data, model)
    groups = data / "models" / model / "placement_groups"
    for name, path in (("fresh", fresh), ("groups", groups)):
        if path.exists():
            out[name] = load_dataset(path)
    return out


def by_arrivals(surrogate: Any, exam: pl.DataFrame) -> dict[str, float]:
    """Throughput SMAPE (%) on the exam's Poisson and unpredictable rows apart."""
    out = {}
    for kind in ("poisson", "unpredictable"):
        rows = exam.filter(pl.col("arrivals") == kind)
        if rows.height == 0:
            continue
        data = twin_set(rows, kind)
        pred = surrogate.predict(data.features)["total_throughput"].to_numpy()
        truth = data.truth["total_throughput"].to_numpy()
        out[kind] = smape_pct(truth, pred)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs=2, help="the data folders of two finished pipelines")
    parser.add_argument("--model", action="append", help="models (default: both)")
    args = parser.parse_args()
    labels = ("A", "B")
    for model in args.model or MODELS:
        surrogates = {label: load(model, data / "models") for label, data in zip(labels, args.data, strict=True)}
        for exam_label, data in zip(labels, args.data, strict=True):
            for name, exam in exams(data, model).items():
                evalset: EvalSet = twin_set(exam, name)
                for label, surrogate in surrogates.items():
                    h = headline(score(surrogate.predict, evalset))
                    split = by_arrivals(surrogate, exam) if name == "fresh" else {}
                    extra = "".join(f", {k} {v:.2f} %" for k, v in split.items())
                    print(f"{model} {name} of {exam_label} ({evalset.features.height} GPUs), surrogate {label}: "
                          f"throughput {h['throughput_smape_pct']:.2f} %, F1 {h['starvation_macro_f1']:.3f}{extra}")


if __name__ == "__main__":
    main()
