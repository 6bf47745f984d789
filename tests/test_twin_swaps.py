"""Adapter swaps: the step time a CPU -> GPU load costs beyond the copy (the calibration's ``swap`` block)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from twin_helpers import fixture_calibration, scenario, write_trace

from adaptwin.io import dumps_json
from adaptwin.twin import simulate

SWAP = {"form": "per_load_slots", "params": {"per_load_ms": 2.0, "per_slot_ms": 0.1}}


def with_swap(data: dict) -> None:
    data["swap"] = SWAP


def test_without_a_swap_block_a_swap_costs_the_copy(tmp_path):
    """Older calibration files (no ``swap`` block) keep the twin they had."""
    _, cal = fixture_calibration(tmp_path)
    bound = cal.for_server(32)
    assert bound.swap_time(8, 16) == bound.load_time(8, 16) == cal.load_time(8, 16)


def test_swap_cost_grows_with_the_configured_slots(tmp_path):
    _, cal = fixture_calibration(tmp_path, with_swap)
    for max_loras in (8, 128):
        bound = cal.for_server(max_loras)
        assert bound.swap_time(16, 16) == pytest.approx(bound.load_time(16, 16) + (2.0 + 0.1 * (max_loras + 1)) / 1000)


def test_one_swap_adds_its_cost_to_the_step_that_loads(tmp_path):
    """Two adapters, one slot (the start-up leaves adapter 1 in it): a lone request of adapter 0 waits one
    prefill step plus the copy plus the swap cost of a 1-slot server; one of adapter 1 loads nothing."""
    _, cal = fixture_calibration(tmp_path, with_swap)
    trace = write_trace(tmp_path / "one.csv", [(1.0, 100, 3)])
    ttft = {}
    for adapter in (0, 1):
        rates = [1.0 if a == adapter else 0.0 for a in (0, 1)]
        sc = scenario(max_loras=1, served=2, duration=10.0, adapters={"ranks": [8, 8], "rates": rates},
                      arrivals={"kind": "trace", "path": str(trace), "mapping": "weighted"},
                      lengths={"kind": "trace", "path": str(trace)})
        out = simulate(sc, cal)
        assert out["finished_requests"] == 1 and out["adapter_loads"] == (1 if adapter == 0 else 0)
        ttft[adapter] = out["ttft_mean_ms"]
    bound = cal.for_server(1)
    assert ttft[0] - ttft[1] == pytest.approx(bound.swap_time(8, 16) * 1000, rel=1e-9)
    assert bound.swap_time(8, 16) * 1000 == pytest.approx(cal.load_time(8, 16) * 1000 + 2.0 + 0.1 * 2)


def test_swap_cost_slows_only_servers_that_swap(tmp_path):
    _, plain = fixture_calibration(tmp_path, None, "plain.json")
    _, swap = fixture_calibration(tmp_path, with_swap, "swap.json")
    resident = scenario(max_loras=24, served=24, duration=200.0)
    assert dumps_json(simulate(resident, plain, zero_wall_time=True)) == dumps_json(
        simulate(resident, swap, zero_wall_time=True))
    swapping = scenario(max_loras=8, served=48, duration=200.0)
    before, after = simulate(swapping, plain), simulate(swapping, swap)
    assert before["adapter_loads"] > 50
    assert after["itl_mean_ms"] > before["itl_mean_ms"]


def test_fit_swap_recovers_a_known_per_slot_cost():
    """Synthetic 5.5-like rows whose steps exceed the twin's costs by 0.2 ms x slots per load (plus a CSV
    offset): the per-slot candidate wins on held-out A_max and recovers the cost."""
    from adaptwin.calibration.models import fit_swap, swap_residual_ms, twin_distinct

    rng = np.random.default_rng(0)
    n = 80
    max_loras = rng.choice([8, 16, 32, 64, 128, 256], n)
    served = max_loras * rng.choice([1, 2, 4], n)
    points = pl.DataFrame({
        "source": rng.choice(["adapter_rates", "aggregated_rate"], n), "max_loras": max_loras, "served": served,
        "mean_running": rng.uniform(5, 100, n), "mean_waiting": np.zeros(n), "mean_visited": np.zeros(n),
        "distinct_adapters": rng.uniform(2, 60, n), "prefill_tokens": rng.uniform(5, 50, n),
        "prefill_seqs": rng.uniform(0.02, 0.2, n), "context_tokens": rng.uniform(1e3, 3e4, n),
        "step_s": np.zeros(n), "loads_per_step": np.where(served > max_loras, rng.uniform(0.01, 0.2, n), 0.0)})
    step = {"intercept": 0.011, "decode_seqs": 1.7e-5, "context_tokens": 1e-7, "prefill_tokens": 2e-5,
            "prefill_seqs": 1e-3}
    sched = {"intercept": 0.0, "running": 4e-6, "waiting": 1e-7}
    lora = {"launch": 0.002, "distinct_adapters": 3e-4, "slots": 3e-5}
    # the twin's costs (copies included) at the distinct adapters it forms
    base_ms = -swap_residual_ms(points, step, sched, lora, 7.0, twin_distinct(points))
    offset = np.where(points["source"] == "aggregated_rate", 6.0, 0.0)
    extra = 0.2 * points["loads_per_step"].to_numpy() * (max_loras + 1)
    fitted = fit_swap(points.with_columns(pl.Series("step_s", (base_ms + offset + extra) / 1000)),
                      step, sched, lora, copy_ms=7.0)
    assert fitted.quality["chosen"] in ("per_slot", "per_load+per_slot")
    assert fitted.block["params"]["per_slot_ms"] == pytest.approx(0.2, rel=1e-6)
    assert fitted.block["params"]["per_load_ms"] == pytest.approx(0.0, abs=1e-6)


def test_the_5_5_swap_loads_copy_in_7_to_8_ms_at_every_a_max():
    """The tables' loading time counts the start-up activations too (one per served adapter, 7.7-8.8 ms
    each in the rows that never swap); without them a swap copies in 7.0-8.0 ms (median per A_max), at
    A_max 8 as at 448. Dividing the total by the serving loads alone instead gives 9-20 ms at
    A_max >= 128, where few loads follow many start-up ones."""
    from test_calibration import measurements

    from adaptwin.calibration.inputs import load_tables

    t = load_tables(measurements()).scheduler_overhead
    startup = (t.filter(pl.col("cpu_loras") == pl.col("gpu_loras")).group_by("gpu_loras")
               .agg((pl.col("max_lora_loading_time") / pl.col("max_lora_loads_from_memory") * 1000).median()
                    .alias("startup_ms")))
    swaps = t.filter((pl.col("cpu_loras") > pl.col("gpu_loras"))
                     & (pl.col("max_lora_loads_from_memory_corrected") >= 200)).join(startup, on="gpu_loras")
    per_load = swaps.with_columns(
        ((pl.col("max_lora_loading_time") * 1000 - pl.col("max_lora_loads_from_disk") * pl.col("startup_ms"))
         / pl.col("max_lora_loads_from_memory_corrected")).alias("swap_ms"),
        (pl.col("max_lora_loading_time") * 1000 / pl.col("max_lora_loads_from_memory_corrected")).alias("naive_ms"),
    ).group_by("gpu_loras").agg(pl.col("swap_ms").median(), pl.col("naive_ms").median()).sort("gpu_loras")
    assert per_load["gpu_loras"].to_list() == [8, 16, 32, 64, 128, 192, 256, 320, 384, 448]
    assert per_load["swap_ms"].min() > 6.9 and per_load["swap_ms"].max() < 8.1
    assert per_load.filter(pl.col("gpu_loras") == 448)["naive_ms"][0] > 19.0


def test_the_calibrated_swap_cost_is_the_held_out_choice():
    from test_calibration import LLAMA, fitted

    swap = fitted()[LLAMA]["swap"]
    q = swap.quality
    assert q["n"] == 135 and q["n_swapping"] == 89  # busy rows without queue of the two 5.5 CSVs
    assert q["chosen"] == min(q["candidates"], key=lambda n: q["candidates"][n]["leave_one_a_max_out_mae_ms"])
    params = swap.block["params"]
    assert set(params) == {"per_load_ms", "per_slot_ms"} and min(params.values()) >= 0.0
    for name, score in q["candidates"].items():
        assert score["leave_one_a_max_out_mae_ms"] >= score["in_sample_mae_ms"] - 1e-9, name
