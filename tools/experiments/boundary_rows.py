"""Experiment (not part of the pipeline): how many training rows does the surrogate have near the starvation
line, by simulated window, and how far is it from the twin there? For the dataset (``data/dataset/<model>``),
the placement-driven training rows, the placement exam and the fresh set: rows, the surrogate's mean
throughput bias and the twin's throughput / ideal, by offered load over the capacity proxy (0.6-0.9,
0.9-1.2, 1.2-2), window (3,600 s or 600 s) and whether every adapter is resident (A_max = served). The
surrogate predicts the hour, so its "bias" on 600 s rows is the window's effect, not an error.

    PYTHONPATH=lib .venv/bin/python tools/experiments/boundary_rows.py data [llama-3.1-8b-instruct]

Outcome (2026-12-02, Llama, `make repro` at 4f7cc09 with 240 hour mixes): at load 0.9-1.2 the dataset held 6
resident and 21 swapping one-hour rows (and 34 + 147 at 600 s); the exam's 31 resident GPUs there were
over-predicted by 2.0 % and the fresh set's overloaded ones (load 1.2-2, 11 rows) by 8.1 %. Doubling the hour
mixes (`dataset.mix_scenarios: [480, 480]`) is what followed. With 480 (`make repro` at 406ba77): 8 resident
and 36 swapping hour rows at 0.9-1.2; the exam's 32 resident GPUs there are over-predicted by 0.6 %, the fresh
set's 11 overloaded ones by 2.0 %.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

from adaptwin.surrogate import load
from adaptwin.surrogate.evaluate import PAPER_FEATURES, twin_set
from adaptwin.surrogate.features import derived_features
from adaptwin.sweep import load_dataset

LOAD_BANDS = ((0.6, 0.9), (0.9, 1.2), (1.2, 2.0))


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "data")
    model = sys.argv[2] if len(sys.argv) > 2 else "llama-3.1-8b-instruct"
    surrogate = load(model, models_dir=data / "models")
    sets = {"dataset": data / "dataset" / model, "coach": data / "models" / model / "placement_train",
            "exam": data / "models" / model / "placement_groups", "fresh": data / "dataset" / "fresh" / model}
    for name, path in sets.items():
        if not path.exists():
            continue
        rows = load_dataset(path).filter(pl.col("error").is_null() & ~pl.col("memory_error").fill_null(True))
        scored = twin_set(rows, name)
        pred = surrogate.predict(scored.features)["total_throughput"].to_numpy()
        truth = scored.truth["total_throughput"].to_numpy()
        base = {c: scored.features[c].to_numpy().astype(float) for c in PAPER_FEATURES}
        load_ratio = derived_features(base, surrogate.calibration)["load_ratio"]
        window = rows["duration_s"].to_numpy()
        resident = base["adapter_slots"] == base["served_adapters"]
        ideal = rows["ideal_throughput"].to_numpy()
        for label, in_window in (("3600 s", window >= 3600), ("600 s", window < 3600)):
            for lo, hi in LOAD_BANDS:
                for kind, sel in (("resident", resident), ("swapping", ~resident)):
                    k = in_window & sel & (load_ratio >= lo) & (load_ratio < hi)
                    if k.sum():
                        print(f"{name:8s} {label:6s} load {lo}-{hi} {kind:8s} rows {int(k.sum()):4d} "
                              f"bias {100 * np.mean(pred[k] / truth[k] - 1):+5.1f} % "
                              f"twin / ideal {np.mean(truth[k] / ideal[k]):.3f}")


if __name__ == "__main__":
    main()
