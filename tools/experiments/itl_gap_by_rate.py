"""Experiment (not part of the pipeline): is the twin's remaining ITL shortfall on starved serving runs a cost per
*arriving request* (vLLM 0.8.5's V0 engine tokenises and enqueues each new request between steps)? If it were,
the gap real ITL - twin ITL would grow in proportion to the arrival rate, with one slope, c x ITL, at every
A_max. Reads the twin validation's per-run rows (stage `validate_twin`), keeps the runs that really starved,
and fits, per family and A_max, gap = slope x (arrivals per second) + intercept.

    PYTHONPATH=lib .venv/bin/python tools/experiments/itl_gap_by_rate.py [data/validation/runs.parquet]

Outcome (2026-12-02, validation of `make repro` at 311a4d6): the per-arrival form does not hold. The implied
cost per arrival, gap / (rate x ITL), is 1.6 ms at A_max 8 and 0.05 ms at A_max 64 (5.6), and within one
A_max the gap does not follow the rate where the scan stops early: slope 0.000 ms per req/s at A_max 8 and 16
(correlation -0.39 and 0.01; 5.9 at 16: -0.001, -0.03) against 0.020-0.030 at A_max 32 and 64 (0.78, 0.61),
where the rate grows with the adapters served and so does the queue the admission scan walks past. So the
lead stays the scheduler's cost per visited waiting request (`scheduler_visits.py`), not a cost per arrival.
"""

from __future__ import annotations

import sys

import numpy as np
import polars as pl


def starved_rows(path: str) -> pl.DataFrame:
    """Starved runs with both ITLs, their arrival rate (req/s) and the ITL gap (ms)."""
    runs = pl.read_parquet(path).filter(pl.col("real_itl").is_not_null() & pl.col("twin_itl").is_not_null()
                                        & pl.col("real_starved"))
    return runs.with_columns(rate=pl.col("twin_arrived_requests") / pl.col("simulated_s"),
                             gap=pl.col("real_itl") - pl.col("twin_itl")).with_columns(
        per_arrival_ms=pl.col("gap") / (pl.col("rate") * pl.col("real_itl") / 1000))


def main() -> None:
    rows = starved_rows(sys.argv[1] if len(sys.argv) > 1 else "data/validation/runs.parquet")
    print("family, A_max, runs, mean rate (req/s), mean gap (ms), implied ms per arrival, "
          "slope (ms per req/s), intercept (ms), correlation")
    for (family, a_max), part in sorted(rows.group_by("family", "max_loras"), key=lambda kv: kv[0]):
        rate, gap = part["rate"].to_numpy(), part["gap"].to_numpy()
        fit = np.polyfit(rate, gap, 1) if part.height >= 4 else (np.nan, np.nan)
        corr = float(np.corrcoef(rate, gap)[0, 1]) if part.height >= 4 else np.nan
        print(f"{family}, {a_max}, {part.height}, {rate.mean():.1f}, {gap.mean():.2f}, "
              f"{part['per_arrival_ms'].mean():.3f}, {fit[0]:.3f}, {fit[1]:.2f}, {corr:.2f}")


if __name__ == "__main__":
    main()
