"""How fast are the surrogates? Milliseconds per prediction of all four outputs, by batch size and entry point.

Placement calls the surrogates thousands of times per workload, mostly one GPU at a time; targets:
<= 0.2 ms per one-row ``predict`` and <= 0.01 ms per row batched. A benchmark, not a test: timings depend on
the machine and its load, so it reports, for each case, the best of a few rounds' medians (a neighbour can
slow a round down, never speed it up) in wall time and in this process's CPU time (on a shared machine the
wall time stretches with the load, the CPU time much less), and it never asserts. The comparisons that hold
whatever the load are ratios of cases measured in the same run: ``single_general_over_fast`` (the general
frame path over the one-row path `Surrogate.predict` takes, on the same frames) and ``single_over_batched``.
``--parts placement`` also times what the surrogate's speed is for: the greedy placement (and its fast
variant) of every workload of ``placement.grid`` in params.yaml, surrogate calls included (`placement_speed.py`
times larger Azure workloads against placement's own targets).

    .venv/bin/python benchmarks/surrogate_speed.py [--model llama-3.1-8b-instruct] [--data-dir data]
        [--parts surrogate placement]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from adaptwin.surrogate import PAPER_FEATURES, Surrogate, load

SINGLE_TARGET_MS = 0.2
BATCHED_TARGET_MS = 0.01


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


def median_ms(fn: Callable[[Any], Any], inputs: Sequence[Any], rounds: int = 3) -> dict[str, float]:
    """Best of ``rounds`` medians of ``fn(item)`` over ``inputs``, in wall and CPU ms (after one warm-up
    call per input, so calibration memos are filled as in a long placement run)."""
    for item in inputs:
        fn(item)
    best = {"wall": float("inf"), "cpu": float("inf")}
    for _ in range(rounds):
        wall, cpu = [], []
        for item in inputs:
            w, c = time.perf_counter(), time.process_time()
            fn(item)
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
        best = {"wall": min(best["wall"], float(np.median(wall))), "cpu": min(best["cpu"], float(np.median(cpu)))}
    return {k: 1e3 * v for k, v in best.items()}


def general_path(surrogate: Surrogate) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """`Surrogate.predict` without its one-row path (frame -> feature matrix -> predictions -> frame)."""
    return lambda frame: surrogate.output_frame(surrogate.predict_matrix(surrogate.matrix(frame)))


def measure(surrogate: Surrogate, singles: int, rounds: int) -> dict[str, Any]:
    """The timings, their ratios and the targets' verdicts."""
    frame = sample_features(10_000)
    rows = [frame[i:i + 1] for i in range(singles)]
    dicts = [frame.row(i, named=True) for i in range(singles)]
    single = median_ms(surrogate.predict, rows, rounds)
    general = median_ms(general_path(surrogate), rows, rounds)
    report: dict[str, Any] = {
        "single_predict_frame_ms": single["wall"], "single_predict_frame_cpu_ms": single["cpu"],
        "single_general_path_ms": general["wall"], "single_general_path_cpu_ms": general["cpu"],
        "single_predict_one_dict_ms": median_ms(surrogate.predict_one, dicts, rounds)["wall"],
    }
    for n in (8, 64, 65, 1_000, 10_000):
        batch = median_ms(surrogate.predict, [frame[:n]] * max(3, 600 // n), rounds)
        report[f"batched_{n}_ms_per_row"] = batch["wall"] / n
        report[f"batched_{n}_cpu_ms_per_row"] = batch["cpu"] / n
    report["single_general_over_fast"] = general["cpu"] / single["cpu"]
    report["single_over_batched"] = single["cpu"] / report["batched_10000_cpu_ms_per_row"]
    report["targets_ms"] = {"single": SINGLE_TARGET_MS, "batched": BATCHED_TARGET_MS}
    report["meets_target"] = {
        "single_wall": single["wall"] <= SINGLE_TARGET_MS, "single_cpu": single["cpu"] <= SINGLE_TARGET_MS,
        "batched_wall": report["batched_10000_ms_per_row"] <= BATCHED_TARGET_MS,
        "batched_cpu": report["batched_10000_cpu_ms_per_row"] <= BATCHED_TARGET_MS,
    }
    return report


def placement_grid(model: str, data_dir: str, models_dir: str | None, repeats: int) -> dict[str, Any]:
    """Seconds (wall and CPU, median of ``repeats``) to place every workload of params.yaml's
    ``placement.grid`` with the greedy and its fast variant (models loaded and workloads generated before)."""
    from adaptwin.params import load_params, shared_dir
    from adaptwin.paths import resolve
    from adaptwin.placement import make_context, place, workloads

    data = resolve(data_dir)
    context = make_context(model, models_dir=resolve(models_dir) if models_dir else data / "models",
                           calibration_path=data / "calibration" / f"{model}.json",
                           metrics_path=data / "metrics" / "surrogates.json", best_throughput=1.0)
    params = load_params()
    frames = [workloads.generate(spec, shared_dir(params)) for spec in workloads.expand_grid(params["placement"]["grid"])]
    out: dict[str, Any] = {"workloads": len(frames)}
    for method in ("greedy", "greedy-fast"):
        wall, cpu = [], []
        for _ in range(repeats):
            w, c = time.perf_counter(), time.process_time()
            gpus = sum(place(frame, context, method).num_gpus for frame in frames)
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
        out[method] = {"wall_s": float(np.median(wall)), "cpu_s": float(np.median(cpu)), "gpus": gpus}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3.1-8b-instruct")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--models-dir", default=None, help="surrogates folder (default: <data-dir>/models)")
    parser.add_argument("--singles", type=int, default=200, help="distinct one-row frames timed")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parts", nargs="+", choices=["surrogate", "placement"], default=["surrogate"])
    parser.add_argument("--repeats", type=int, default=3, help="placement runs per method (median)")
    args = parser.parse_args()
    report: dict[str, Any] = {"model": args.model}
    if "surrogate" in args.parts:
        from adaptwin.paths import resolve

        models_dir = args.models_dir or resolve(args.data_dir) / "models"
        surrogate = load(args.model, models_dir)
        report["trees"] = {t: int(m.tree_count_) for t, m in surrogate.models.items()}
        report.update(measure(surrogate, args.singles, args.rounds))
    if "placement" in args.parts:
        report["placement_grid"] = placement_grid(args.model, args.data_dir, args.models_dir, args.repeats)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
