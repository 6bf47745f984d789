"""How fast are the surrogates? Milliseconds per prediction of all four outputs, by batch size and entry point.

Placement calls the surrogates thousands of times per workload, mostly one GPU at a time; targets:
<= 0.3 ms per single prediction and <= 0.01 ms per prediction batched. A benchmark, not a test: timings depend
on the machine and its load, so it reports medians and never asserts.

    .venv/bin/python benchmarks/surrogate_speed.py [--model llama-3.1-8b-instruct] [--models-dir data/models]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import polars as pl

from adaptwin.surrogate import PAPER_FEATURES, load


def sample_features(n: int, seed: int = 0) -> pl.DataFrame:
    """``n`` plausible GPUs (the paper's seven features)."""
    rng = np.random.default_rng(seed)
    served = rng.integers(8, 577, n).astype(float)
    slots = np.minimum(rng.choice([8, 16, 32, 64, 96, 128, 192], n), served).astype(float)
    mean_rate = np.exp(rng.uniform(np.log(0.005), np.log(2.0), n))
    return pl.DataFrame({
        "sum_rate": mean_rate * served, "std_rate": mean_rate * rng.uniform(0, 1, n),
        "max_size": rng.choice([8.0, 16.0, 32.0], n), "mean_size": rng.uniform(8, 16, n),
        "std_size": rng.uniform(0, 8, n), "served_adapters": served, "adapter_slots": slots,
    }).select(PAPER_FEATURES)


def median_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3.1-8b-instruct")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    surrogate = load(args.model, args.models_dir)
    frame = sample_features(10_000)
    one_frame, one_dict = frame[:1], frame.row(0, named=True)
    report = {
        "model": args.model,
        "trees": {t: int(m.tree_count_) for t, m in surrogate.models.items()},
        "single_predict_frame_ms": median_ms(lambda: surrogate.predict(one_frame), args.repeats),
        "single_predict_one_dict_ms": median_ms(lambda: surrogate.predict_one(one_dict), args.repeats),
    }
    for rows in (64, 65, 1_000, 10_000):
        batch = frame[:rows]
        ms = median_ms(lambda b=batch: surrogate.predict(b), max(5, args.repeats // rows))
        report[f"batched_{rows}_ms_per_row"] = ms / rows
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
