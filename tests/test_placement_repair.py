"""Beyond-the-paper steps of the proposed placement: splitting adapters too busy for one GPU, the final A_max
choice among near-equal ones, and the twin-in-the-loop repair (on the analytic stand-in surrogate of
tests/test_placement_fakes.py and the example calibration)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import polars as pl
import pytest
from test_placement_fakes import BASE_CAPACITY, FIXTURE, TOKENS, fake_evaluator, fake_workload

from adaptwin.calibration.costs import load_calibration
from adaptwin.placement import greedy, repair
from adaptwin.placement.api import Context, place
from adaptwin.placement.core import Gpu, Placement


def routed_shares(p: Placement) -> dict[int, float]:
    """Sum over GPUs of the share of each adapter routed there."""
    total: dict[int, float] = defaultdict(float)
    for gpu in p.gpus:
        for i, m in enumerate(gpu.members):
            total[m] += gpu.share_of(i)
    return total


def with_heavy_adapter(n: int = 60, factor: float = 2.5) -> pl.DataFrame:
    """A workload whose first adapter alone offers ``factor`` x the fake GPU's base capacity."""
    w = fake_workload(n, mean_rate=0.2, ranks=(8, 16))
    heavy = factor * BASE_CAPACITY / TOKENS
    return w.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(heavy).otherwise(pl.col("rate")).alias("rate"))


@pytest.mark.parametrize("method", ["greedy", "greedy-fast", "greedy-latency"])
def test_a_too_busy_adapter_is_split_into_safe_shares_and_every_request_is_routed(method):
    ctx = Context("llama-3.1-8b-instruct", fake_evaluator(), BASE_CAPACITY, "fake", "test")
    workload = with_heavy_adapter()
    p = place(workload, ctx, method)
    assert p.notes["split_adapters"] == 1
    shares = routed_shares(p)
    assert sorted(shares) == list(range(workload.height))
    assert all(abs(s - 1.0) < 1e-9 for s in shares.values())  # conservation: every request goes somewhere
    carrying = [g for g in p.gpus if 0 in g.members]
    assert len(carrying) >= 3  # 2.5 x capacity cannot fit on fewer than three GPUs
    assert all(g.safe for g in p.gpus) and p.notes["overloaded_gpus"] == []
    routed = sum(float(p.gpu_adapters(g)["rate"].sum()) for g in range(p.num_gpus))
    assert routed == pytest.approx(float(workload["rate"].sum()))
    assert all(g.max_loras <= len(g.members) for g in p.gpus)


def test_without_extensions_nothing_is_split():
    ctx = Context("llama-3.1-8b-instruct", fake_evaluator(), BASE_CAPACITY, "fake", "test", extensions=False)
    p = place(with_heavy_adapter(), ctx, "greedy")
    assert "split_adapters" not in p.notes and all(not g.shares for g in p.gpus)


def test_collapse_merges_shares_of_one_adapter_on_one_gpu():
    origin, share = np.array([0, 0, 0, 1]), np.array([1 / 3, 1 / 3, 1 / 3, 1.0])
    gpu = Gpu((0, 1, 3), 3, 16, {"total_throughput": 1.0, "itl_mean_ms": 1.0, "starvation_probability": 0.0})
    (out,) = greedy.collapse([gpu], origin, share)
    assert out.members == (0, 1) and out.shares == pytest.approx((2 / 3, 1.0)) and out.max_loras == 2


def test_final_a_max_is_the_least_starving_among_near_best_throughputs():
    ev = fake_evaluator()
    workload = fake_workload(200, mean_rate=0.2)
    gpus, _ = greedy.place_greedy(workload, ev)
    ranks, rates = workload["rank"].to_numpy(), workload["rate"].to_numpy().astype(float)
    for gpu in gpus:
        m = list(gpu.members)
        options = ev.a_max_options(len(m), gpu.max_lora_rank)
        res = ev.evaluate([(ranks[m], rates[m])], [options])
        safe = np.flatnonzero(res["ok"])
        assert gpu.max_loras in res["a_max"][safe]
        near = safe[res["total_throughput"][safe] >= (1 - ev.margin) * res["total_throughput"][safe].max()]
        chosen = int(np.flatnonzero(res["a_max"] == gpu.max_loras)[0])
        assert res["starvation_probability"][chosen] <= res["starvation_probability"][near].min() + 1e-12


def overloaded_placement(workload: pl.DataFrame) -> Placement:
    """Every adapter on one GPU at 8 slots: far beyond what the twin serves."""
    gpu = Gpu(tuple(range(workload.height)), 8, int(workload["rank"].max()),
              {"total_throughput": 0.0, "itl_mean_ms": 0.0, "starvation_probability": 1.0})
    return Placement("llama-3.1-8b-instruct", "greedy", workload, [gpu], 1)


def test_repair_fixes_every_gpu_the_twin_fails_and_keeps_every_adapter():
    cal = load_calibration(FIXTURE)
    workload = fake_workload(16, mean_rate=1.5, ranks=(8, 16))
    before = overloaded_placement(workload)
    assert not repair._passes((repair._scenario(before, before.gpus[0], 300), cal))
    fixed = repair.repair(before, fake_evaluator(), cal, duration_s=300, workers=2)
    assert fixed.num_gpus > before.num_gpus and fixed.notes["repaired_gpus"] >= 1
    assert fixed.notes["unrepaired_gpus"] == 0
    assert all(repair._passes((repair._scenario(fixed, g, 300), cal)) for g in fixed.gpus)
    shares = routed_shares(fixed)
    assert sorted(shares) == list(range(workload.height)) and all(abs(s - 1) < 1e-9 for s in shares.values())


def test_repair_leaves_a_placement_the_twin_passes_unchanged():
    cal = load_calibration(FIXTURE)
    workload = fake_workload(12, mean_rate=0.1, ranks=(8,))
    gpu = Gpu(tuple(range(12)), 8, 8, {"total_throughput": 1.0, "itl_mean_ms": 1.0, "starvation_probability": 0.0})
    light = Placement("llama-3.1-8b-instruct", "greedy", workload, [gpu], 1)
    out = repair.repair(light, fake_evaluator(), cal, duration_s=1200, workers=1)
    assert out.gpus == light.gpus and out.notes["repaired_gpus"] == 0 and out.notes["repair_twin_runs"] == 1


def test_verification_simulates_each_distinct_gpu_once(monkeypatch):
    from adaptwin.placement import verify

    cal = load_calibration(FIXTURE)
    ctx = Context("llama-3.1-8b-instruct", fake_evaluator(), BASE_CAPACITY, "fake", "test")
    p = place(fake_workload(30, mean_rate=0.3, ranks=(8, 16)), ctx, "greedy")
    calls = []
    real = verify._simulate
    monkeypatch.setattr(verify, "_simulate", lambda job: calls.append(1) or real(job))
    rows = verify.verify([p, p], cal, duration_s=60, workers=1)
    assert len(calls) == p.num_gpus and rows.height == 2 * p.num_gpus
    half = rows.drop("method").to_dicts()
    assert half[: p.num_gpus] == half[p.num_gpus:]


def test_an_adapter_the_twin_serves_alone_is_kept_whole():
    """The fake surrogate rates an adapter at 1.1 x its capacity unsafe alone, so the greedy splits it over two
    GPUs; the twin (example calibration) serves it alone, so `repair_splits` places it whole on one GPU."""
    cal = load_calibration(FIXTURE)
    ctx = Context("llama-3.1-8b-instruct", fake_evaluator(), BASE_CAPACITY, "fake", "test")
    workload = with_heavy_adapter(1, 1.1)
    split = place(workload, ctx, "greedy")
    assert split.num_gpus == 2 and repair.split_rows(split) == [0]
    assert repair.whole_is_safe(split, [0], cal, duration_s=300, workers=1) == frozenset({0})
    out = repair.repair_splits(split, lambda keep: place(workload, ctx, "greedy", keep_whole=keep),
                               fake_evaluator(), cal, duration_s=300, workers=1)
    assert out.num_gpus == 1 and out.notes["unsplit_adapters"] == 1 and repair.split_rows(out) == []
    assert routed_shares(out) == {0: pytest.approx(1.0)}
    assert repair._passes((repair._scenario(out, out.gpus[0], 300), cal))


def test_an_adapter_the_twin_cannot_serve_alone_stays_split():
    cal = load_calibration(FIXTURE)
    ctx = Context("llama-3.1-8b-instruct", fake_evaluator(), BASE_CAPACITY, "fake", "test")
    workload = with_heavy_adapter(1, 3.0)
    split = place(workload, ctx, "greedy")
    out = repair.repair_splits(split, lambda keep: place(workload, ctx, "greedy", keep_whole=keep),
                               fake_evaluator(), cal, duration_s=300, workers=1)
    assert out.notes["unsplit_adapters"] == 0 and repair.split_rows(out) == [0]
    assert out.num_gpus >= split.num_gpus
