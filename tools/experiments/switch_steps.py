"""Experiment (not part of the pipeline): what one adapter switch costs in a model's own loading runs (5.3),
against what the twin charges for it, and whether that difference is a per-load cost of serving.

Why: on the unstarved 5.6 runs at A_max 8-32 that serve more adapters than slots (``--runs``), the twin's ITL is
3-15 % short in 28 of 37 runs, whose batch is within 6 %; spread over their loads, the gap would be
tens of ms per load, against the 6-8 ms copy the twin charges (5.3's logged "loads from memory").

The 5.3 runs time a switch directly. A_max 1, one request per adapter, all sent at once, so the server runs
them one after the other and every request starts with a load: TTFT_k = t0 + k x cycle, cycle = (output - 1)
x TPOT + switch. From the summary alone (independent of the twin):

    mean TTFT = t0 + (n - 1) / 2 x cycle,   duration = t0 + (n - 1) x cycle + (output - 1) x TPOT
    cycle = (duration - mean TTFT - (output - 1) x TPOT) / ((n - 1) / 2),   switch = cycle - (output - 1) x TPOT

(the median spacing of the per-adapter TTFTs in the runs' JSON gives the same cycle within 3 ms). The twin's
switch step: one prefill of the run's prompt with LoRA at A_max 1, its scheduler time and the copy (`swap_time`).

    PYTHONPATH=lib .venv/bin/python tools/experiments/switch_steps.py data/measurements data/calibration \
        [--runs data/validation/runs.parquet]
    PYTHONPATH=lib .venv/bin/python tools/experiments/switch_steps.py data/measurements data/calibration \
        --variant OUT.json --model llama-3.1-8b-instruct --per-load-ms 19.2
    PYTHONPATH=lib .venv/bin/python tools/experiments/validate_full.py OUT.json OUT.parquet
    PYTHONPATH=lib .venv/bin/python tools/experiments/validate_full.py --compare data/validation/runs.parquet OUT.parquet

Outcome (2026-12-03, with the calibration and validation frame that the submitted 2ef0da5 reproduces):

* Real switch 42-48 ms (Llama), 39-40 ms (Qwen); the twin's 24-26 ms and 20-21 ms. Excess per run 17.7-21.6 ms
  (Llama, mean 19.2), 18.1-19.7 ms (Qwen, mean 18.8): the same for every rank and S_max, and for both models.
* Charged as a per-load cost of serving (``swap.per_load_ms`` = 19.2, Llama) it helps the runs it was meant
  for and breaks the rest. 5.6 unstarved mean ITL SMAPE by A_max 8 / 16 / 32 / 64 / 128: 3.97 / 5.82 / 7.17 /
  8.00 / 5.39 % -> 2.21 / 3.03 / 7.36 / 25.98 / 22.85 %; starved A_max 192: 2.94 -> 31.62 %. Overall 5.6
  throughput / ITL / TTFT 3.31 / 5.65 / 12.24 -> 4.18 / 8.40 / 20.04 %, ITL gap -2.92 -> +13.72 points; 5.9
  3.24 / 6.98 / 19.01 -> 3.63 / 7.68 / 22.84 %.
* So the 5.3 excess is not what a load costs inside a busy batch (the runs at A_max >= 64 load thousands of
  times an hour and would be 15-40 % slower). It is a cost of 5.3's own situation, which the runs cannot
  separate from the load: a step that prefills a lone request after the batch emptied. Not adopted; the twin
  still charges the copy only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from adaptwin.calibration.costs import load_calibration

LOADING_RUNS = "predictor_loading"


def switch_points(measurements: str) -> pl.DataFrame:
    """One row per ok 5.3 run: model, rank, S_max, prompt tokens and the measured switch in ms."""
    runs = pl.read_parquet(Path(measurements) / "runs.parquet").filter(
        pl.col("run_id").str.contains(f"/{LOADING_RUNS}/") & (pl.col("status") == "ok"))
    n, out, tpot = pl.col("num_prompts"), pl.col("output_len"), pl.col("tpot_mean_ms")
    cycle = (pl.col("duration_s") * 1000 - pl.col("ttft_mean_ms") - (out - 1) * tpot) / ((n - 1) / 2)
    return (runs.with_columns(pl.col("adapter_ranks").list.first().alias("rank"),
                              (pl.col("total_input_tokens") / n).alias("prompt_tokens"),
                              (cycle - (out - 1) * tpot).alias("switch_ms"))
            .select("model", "rank", "max_lora_rank", "num_prompts", "prompt_tokens", "tpot_mean_ms", "switch_ms")
            .sort("model", "max_lora_rank", "rank"))


def twin_switch_ms(points: pl.DataFrame, calibration_dir: str) -> pl.DataFrame:
    """``points`` with the twin's switch step (ms) and the excess of the measured one over it."""
    twin = []
    for row in points.iter_rows(named=True):
        cal = load_calibration(Path(calibration_dir) / f"{row['model']}.json").for_server(1, row["max_lora_rank"])
        prompt = round(row["prompt_tokens"])
        seconds = (cal.step_time(0, prompt, 0, 1, prefill_seqs=1)
                   + cal.scheduler_time(0, (row["num_prompts"] - 1) / 2)
                   + cal.swap_time(row["rank"], row["max_lora_rank"]))
        twin.append(seconds * 1000)
    return points.with_columns(pl.Series("twin_ms", twin)).with_columns(
        (pl.col("switch_ms") - pl.col("twin_ms")).alias("excess_ms"))


def swapping_runs(runs_path: str) -> pl.DataFrame:
    """The unstarved 5.6 runs at A_max <= 32 that serve more adapters than slots: the twin's ITL and batch
    bias (%) and its loads per hour."""
    runs = pl.read_parquet(runs_path).filter(
        (pl.col("family") == "real_results") & pl.col("real_itl").is_not_null() & ~pl.col("real_starved")
        & (pl.col("max_loras") <= 32) & (pl.col("served_adapters") > pl.col("max_loras")))
    return runs.select(
        "max_loras", "served_adapters", "max_lora_rank",
        ((pl.col("twin_itl") / pl.col("real_itl") - 1) * 100).alias("itl_bias_pct"),
        ((pl.col("twin_mean_batch_size") / pl.col("real_mean_running") - 1) * 100).alias("batch_bias_pct"),
        "twin_adapter_loads").sort("max_loras", "max_lora_rank", "served_adapters")


def write_variant(calibration_dir: str, model: str, per_load_ms: float, out: str) -> None:
    """A copy of ``model``'s calibration that charges ``per_load_ms`` with every load (``swap.per_load_ms``)."""
    data = json.loads((Path(calibration_dir) / f"{model}.json").read_text())
    data["swap"]["params"]["per_load_ms"] = per_load_ms
    Path(out).write_text(json.dumps(data, indent=1, sort_keys=True))
    print(f"wrote {out}: swap.per_load_ms = {per_load_ms}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("measurements")
    ap.add_argument("calibration_dir")
    ap.add_argument("--runs", metavar="RUNS.parquet", help="a validation frame: print its swapping runs")
    ap.add_argument("--variant", metavar="OUT.json")
    ap.add_argument("--model", default="llama-3.1-8b-instruct")
    ap.add_argument("--per-load-ms", type=float)
    args = ap.parse_args()
    table = twin_switch_ms(switch_points(args.measurements), args.calibration_dir)
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_width_chars=200, float_precision=1):
        print(table)
        print(table.group_by("model").agg(pl.col("excess_ms").mean().alias("mean_excess_ms"),
                                          pl.col("excess_ms").min().alias("min"), pl.col("excess_ms").max().alias("max")))
        if args.runs:
            print(swapping_runs(args.runs))
    if args.variant:
        per_load = args.per_load_ms
        if per_load is None:
            per_load = float(table.filter(pl.col("model") == args.model)["excess_ms"].mean())
        write_variant(args.calibration_dir, args.model, per_load, args.variant)


if __name__ == "__main__":
    main()
