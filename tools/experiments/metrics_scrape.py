"""Experiment (not part of the pipeline): the /metrics renders that hold vLLM 0.8.5's API server, read in the
corpus and timed on prometheus_client (`adaptwin.twin.frontend` models them).

vLLM 0.8.5's V1 Prometheus logger adds a ``vllm:lora_requests_info`` series for every combination of waiting and
running adapters it logs and never removes one; the harness polls /metrics every 2 s and prometheus_client
renders the page inside the API server's event loop.

    PYTHONPATH=lib .venv/bin/python tools/experiments/metrics_scrape.py --render
    PYTHONPATH=lib .venv/bin/python tools/experiments/metrics_scrape.py --corpus DATA

``--render`` times ``generate_latest`` of one such gauge with S series of E adapter names each (names
``lora-<i>``) and fits seconds = per_series x S + per_entry x (S x E). ``--corpus`` reads a pipeline's
``DATA/measurements`` (poll times: the gap between polls minus the poller's 2 s sleep) and
``DATA/validation/runs.parquet``: the median poll time per family, served adapters and ten-minute bin; and,
on the runs the real server did not starve (both mean TTFTs under 600 ms), real minus twin mean TTFT against
sum(poll time^2) / (2 x window), the mean wait of a request that lands in a render.

Outcome (2026-12-03, this machine; corpus and twin of the registry-copy pipeline, before the renders):

* ``--render``: 9.0 us per series and 0.20 us per adapter name (gzip would add ~4.4 us per name; the real
  poll times rule it out: with it an hour at 128 served would take seconds per poll, the corpus shows 0.47 s).
* poll times grow linearly over every LoRA hour, faster with more adapters served: 5.6 medians 0.05 -> 0.47 s
  (first -> last ten minutes) at 128 served, 0.11 -> 0.85 s at 384; 5.9 alike; 5.1 (no LoRA) ~7-9 ms flat.
* real minus twin TTFT = 10.0 + 1.97 x sum(B^2)/(2T) ms on 5.6 (24 runs, correlation 0.89) and 4.4 + 1.70 x
  on 5.9 (89 runs, 0.94), while real and twin median TTFT agree within a few %: the gap is a tail. A slope
  near 2 is a render on each side of the request: at the door and at its first token.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import polars as pl

from adaptwin.calibration.inputs import POLL_SLEEP_S

SHORT_TTFT_MS = 600.0


def render_costs() -> tuple[float, float]:
    """(per series, per adapter name) seconds of prometheus_client's render of a lora_requests_info gauge."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    rows = []
    for n_series in (500, 2000, 6000):
        for n_names in (2, 10, 40, 100):
            registry = CollectorRegistry()
            gauge = Gauge("vllm:lora_requests_info", "Running stats on lora requests.",
                          labelnames=["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
                          registry=registry)
            rng, names = random.Random(0), [f"lora-{i}" for i in range(400)]
            for _ in range(n_series):
                running = ",".join(sorted(rng.sample(names, n_names)))
                gauge.labels(max_lora="128", waiting_lora_adapters="", running_lora_adapters=running
                             ).set_to_current_time()
            best = min(_timed(generate_latest, registry) for _ in range(3))
            rows.append((n_series, n_series * n_names, best))
            print(f"{n_series:5d} series x {n_names:3d} names: {best * 1e3:7.1f} ms", flush=True)
    design = np.array([[s, e] for s, e, _ in rows], dtype=float)
    coef = np.linalg.lstsq(design, np.array([t for *_, t in rows]), rcond=None)[0]
    return float(coef[0]), float(coef[1])


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def poll_times(measurements: Path) -> pl.DataFrame:
    """Every in-window poll of the serving runs with a result: run, family, served, t_s and its poll time."""
    runs = (pl.read_parquet(measurements / "runs.parquet")
            .filter(pl.col("family").is_in(["real_results", "heterogeneous_results"])
                    & pl.col("ttft_mean_ms").is_not_null())
            .select("run_id", "family", "served_adapters"))
    return (pl.read_parquet(measurements / "timeseries.parquet").join(runs, on="run_id").sort("run_id", "sample")
            .with_columns((pl.col("t_s").diff().over("run_id") - POLL_SLEEP_S).clip(0).alias("poll_s"))
            .filter(pl.col("in_window").fill_null(False) & pl.col("poll_s").is_not_null() & (pl.col("t_s") < 3600)))


def growth_table(polls: pl.DataFrame) -> pl.DataFrame:
    """Median poll time (s) per family, served adapters and ten-minute bin of the window."""
    return (polls.with_columns((pl.col("t_s") // 600).cast(pl.Int64).alias("bin"))
            .group_by("family", "served_adapters", "bin").agg(pl.col("poll_s").median())
            .sort("bin").pivot(on="bin", index=["family", "served_adapters"], values="poll_s")
            .sort("family", "served_adapters"))


def ttft_gap(polls: pl.DataFrame, validation: pl.DataFrame) -> list[str]:
    """Per family: real - twin mean TTFT (ms) fitted to a line in sum(poll^2) / (2 x 3600 s) (ms)."""
    wait = polls.group_by("run_id").agg(((pl.col("poll_s") ** 2).sum() / (2 * 3600.0) * 1000).alias("wait_ms"))
    rows = (validation.filter(~pl.col("real_starved").fill_null(True) & (pl.col("real_ttft") < SHORT_TTFT_MS)
                              & (pl.col("twin_ttft") < SHORT_TTFT_MS))
            .join(wait, on="run_id").with_columns((pl.col("real_ttft") - pl.col("twin_ttft")).alias("gap_ms")))
    out = []
    for family in rows["family"].unique().sort().to_list():
        x = rows.filter(pl.col("family") == family)
        gap, w = x["gap_ms"].to_numpy(), x["wait_ms"].to_numpy()
        a, b = np.linalg.lstsq(np.column_stack([np.ones_like(w), w]), gap, rcond=None)[0]
        out.append(f"{family}: {len(gap)} runs, real - twin TTFT = {a:.1f} + {b:.2f} x render wait (ms), "
                   f"correlation {np.corrcoef(gap, w)[0, 1]:.2f}; median gap {np.median(gap):.1f} ms")
    return out


def render_check(polls: pl.DataFrame, validation: pl.DataFrame) -> pl.DataFrame | None:
    """Per family, real verdict and served adapters: the median over runs of the real mean poll time and of
    the twin's mean render (``twin_metrics_render_s``, present once the twin models renders), in s."""
    if "twin_metrics_render_s" not in validation.columns:
        return None
    real = polls.group_by("run_id").agg(pl.col("poll_s").mean().alias("real_poll_s"))
    return (validation.filter(pl.col("real_starved").is_not_null()).join(real, on="run_id")
            .group_by("family", "real_starved", "served_adapters")
            .agg(pl.len().alias("runs"), pl.col("real_poll_s").median(), pl.col("twin_metrics_render_s").median())
            .sort("family", "real_starved", "served_adapters"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", action="store_true", help="time prometheus_client's render")
    parser.add_argument("--corpus", type=Path, metavar="DATA", help="a finished pipeline's data folder")
    args = parser.parse_args()
    if args.render:
        per_series, per_entry = render_costs()
        print(f"per series {per_series * 1e6:.2f} us, per adapter name {per_entry * 1e6:.3f} us")
    if args.corpus:
        polls = poll_times(args.corpus / "measurements")
        pl.Config.set_tbl_rows(40)
        print("median poll time (s) by ten-minute bin of the window:")
        print(growth_table(polls))
        validation = pl.read_parquet(args.corpus / "validation" / "runs.parquet")
        for line in ttft_gap(polls, validation):
            print(line)
        check = render_check(polls, validation)
        if check is not None:
            print("real mean poll time against the twin's mean render (s):")
            print(check)


if __name__ == "__main__":
    main()
