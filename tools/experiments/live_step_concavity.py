"""Experiment (not part of the pipeline): is the live CPU engine's forward time linear in the decoding batch, as
the twin's step form assumes? Reads the last `make repro-live` pass's step logs (``data/live/loop``).

    PYTHONPATH=lib .venv/bin/python tools/experiments/live_step_concavity.py

It prints the step terms (ms: intercept, per decoding sequence, per prompt token, per prompt) fitted to the
profiling runs with and without the ``steady`` run and to the steady run alone, and what each fit predicts for a
full 64-request decode step against the median measured one (each run's CPU slowdown divided out).

Outcome (2026-12-02, pass 4 of that day): steady run alone 0.34 ms per sequence (batches up to ~10); pooled
fit 0.19 ms, predicting 16.4 ms for a 64-request step against 12.3 ms measured (14.5 ms without the steady
run): the cost per sequence falls with the batch, so a linear step form fitted over small and large batches
runs the twin's large batches long.
"""

from __future__ import annotations

import numpy as np

from adaptwin.profiling import engine_steps, live_loop


def main() -> None:
    """Fit and print (see the module docstring)."""
    loop = live_loop.load_loop_config("profiling/live_loop.yaml")
    work = live_loop.work_dir(loop)
    slowdown = live_loop.read_slowdowns(work)
    names = [f"decode_{n}" for n in loop.calibration["batches"]] + ["long_prompt", "round_robin", "steady"] + [
        f"crowd_{k}" for k in range(int(loop.calibration.get("crowd_repeats", 1)))]
    runs = live_loop.read_steps(work, [live_loop.run_name(loop.served, n) for n in names])
    runs = {k: v * np.r_[np.ones(5), 1 / slowdown.get(k, 1.0)] for k, v in runs.items()}
    top = live_loop.run_name(loop.served, f"decode_{max(loop.calibration['batches'])}")
    full = runs[top][(runs[top][:, 1] == 0) & (runs[top][:, 3] == max(loop.calibration["batches"]))][:, 5]
    steady = live_loop.run_name(loop.served, "steady")
    for label, keys in (("all runs", list(runs)), ("without steady", [k for k in runs if k != steady]),
                        ("steady alone", [steady])):
        fit = engine_steps.fit_steps(np.vstack([runs[k] for k in keys if k in runs]))
        terms = [fit[k] * 1000 for k in ("intercept", "decode_seqs", "prefill_tokens", "prefill_seqs")]
        print(f"{label:15s} terms (ms) {np.round(terms, 4).tolist()}  full-batch step predicted "
              f"{(fit['intercept'] + fit['decode_seqs'] * max(loop.calibration['batches'])) * 1000:.2f} ms, "
              f"measured median {np.median(full) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
