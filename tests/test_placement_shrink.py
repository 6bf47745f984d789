"""Twin-checked shrinking of the proposed placements (`adaptwin.placement.shrink`) and the twin's check of a
one-GPU lower bound (`Context.lower_bound`), on the analytic stand-in surrogate and the example calibration."""

from __future__ import annotations

from collections import defaultdict

import polars as pl
import pytest
from test_placement_fakes import BASE_CAPACITY, FIXTURE, fake_evaluator, fake_workload

from adaptwin.calibration.costs import load_calibration
from adaptwin.placement import bounds, repair, shrink, verify
from adaptwin.placement.api import Context, place
from adaptwin.placement.core import Gpu, Placement

MODEL = "llama-3.1-8b-instruct"
NO_PREDICTION = {"total_throughput": 0.0, "itl_mean_ms": 0.0, "starvation_probability": 0.0}


def spread(workload: pl.DataFrame, count: int, lower: int = 1, shares: dict[int, float] | None = None) -> Placement:
    """Rows dealt round-robin over ``count`` GPUs at A_max = members (a placement with too many GPUs)."""
    groups = [list(range(g, workload.height, count)) for g in range(count)]
    ranks = workload["rank"].to_numpy()
    gpus = [Gpu(tuple(m), len(m), int(ranks[m].max()), dict(NO_PREDICTION),
                tuple((shares or {}).get(i, 1.0) for i in m) if shares else ()) for m in groups]
    return Placement(MODEL, "greedy", workload, gpus, lower)


def routed(p: Placement) -> dict[int, float]:
    total: dict[int, float] = defaultdict(float)
    for gpu in p.gpus:
        for i, m in enumerate(gpu.members):
            total[m] += gpu.share_of(i)
    return dict(total)


@pytest.mark.parametrize("order", shrink.ORDERS)
def test_deal_routes_every_share_once_and_balances_load_within_one_unit(order):
    workload = fake_workload(40, mean_rate=0.3, ranks=(8, 16, 32))
    before = spread(workload, 5)
    groups, shares = shrink.deal(before, 3, order)
    assert len(groups) == 3
    total: dict[int, float] = defaultdict(float)
    for members, part in zip(groups, shares, strict=True):
        for m, s in zip(members, part, strict=True):
            total[m] += s
    assert total == pytest.approx(routed(before))  # conservation: every request still has a GPU
    rates = workload["rate"].to_numpy()
    loads = [sum(rates[m] * s for m, s in zip(g, p, strict=True)) for g, p in zip(groups, shares, strict=True)]
    assert max(loads) - min(loads) <= rates.max() + 1e-12  # LPT: the spread is at most one unit
    assert shrink.deal(before, 3, order) == (groups, shares)  # deterministic


def test_rank_order_deals_the_largest_ranks_first_one_per_gpu():
    workload = fake_workload(30, mean_rate=0.3, ranks=(8, 32))
    ranks = workload["rank"].to_numpy()
    big = int((ranks == 32).sum())
    groups, _ = shrink.deal(spread(workload, 4), 3, "rank")
    per_gpu = [int((ranks[g] == 32).sum()) for g in groups]
    assert sum(per_gpu) == big and max(per_gpu) - min(per_gpu) <= 1


def test_split_shares_stay_split_and_sum_to_one():
    workload = fake_workload(12, mean_rate=0.2, ranks=(8,))
    half = Gpu((0, 1), 2, 8, dict(NO_PREDICTION), (0.5, 1.0))
    other = Gpu((0, *range(2, 12)), 11, 8, dict(NO_PREDICTION), (0.5, *[1.0] * 10))
    before = Placement(MODEL, "greedy", workload, [half, other], 1)
    groups, shares = shrink.deal(before, 2, "rate")
    total: dict[int, float] = defaultdict(float)
    for members, part in zip(groups, shares, strict=True):
        for m, s in zip(members, part, strict=True):
            total[m] += s
    assert total == pytest.approx(dict.fromkeys(range(12), 1.0))


def test_shrink_reaches_the_lower_bound_when_the_twin_passes_every_gpu():
    cal = load_calibration(FIXTURE)
    workload = fake_workload(12, mean_rate=0.05, ranks=(8, 16))
    before = spread(workload, 4)
    out = shrink.shrink(before, fake_evaluator(), cal, duration_s=600, workers=1)
    assert out.num_gpus == 1 and out.notes["shrunk_gpus"] == 3
    assert routed(out) == pytest.approx(dict.fromkeys(range(12), 1.0))
    assert all(repair.check_gpus(out, out.gpus, cal, 600, 1, {}))
    assert out.notes["repair_time_s"] > 0


def test_shrink_keeps_a_placement_when_no_fewer_gpus_pass():
    """Heavy adapters: the twin fails them on one GPU, so two stay (and shrinking never adds one)."""
    cal = load_calibration(FIXTURE)
    workload = fake_workload(16, mean_rate=1.5, ranks=(8, 16))
    before = spread(workload, 2)
    single = shrink.configured(before, 1, "rate", fake_evaluator(), "throughput")
    assert not any(repair.check_gpus(before, single, cal, 300, 1, {}))
    out = shrink.shrink(before, fake_evaluator(), cal, duration_s=300, workers=1)
    assert out.gpus == before.gpus and out.notes["shrunk_gpus"] == 0 and out.notes["shrink_twin_runs"] == 2


def test_a_placement_at_its_lower_bound_is_not_simulated():
    cal = load_calibration(FIXTURE)
    workload = fake_workload(10, mean_rate=0.05, ranks=(8,))
    before = spread(workload, 2, lower=2)
    out = shrink.shrink(before, fake_evaluator(), cal, duration_s=300, workers=1)
    assert out.gpus == before.gpus and out.notes["shrink_twin_runs"] == 0


def test_the_latency_variant_falls_back_to_the_throughput_choice():
    assert shrink._preferences("itl") == ("itl", "throughput")
    assert shrink._preferences("throughput") == ("throughput",)


def test_repair_and_shrink_never_ends_with_more_gpus_than_the_repair():
    cal = load_calibration(FIXTURE)
    ctx = Context(MODEL, fake_evaluator(), BASE_CAPACITY, "fake", "test")
    workload = fake_workload(24, mean_rate=0.4, ranks=(8, 16))
    p = place(workload, ctx, "greedy")
    again = lambda keep: place(workload, ctx, "greedy", keep_whole=keep)  # noqa: E731
    fixed = repair.repair_splits(p, again, ctx.evaluator, cal, 300, 1, {})
    out = shrink.repair_and_shrink(p, again, ctx.evaluator, cal, 300, 1, {})
    assert out.num_gpus <= fixed.num_gpus and out.num_gpus >= p.lower_bound_gpus
    assert routed(out) == pytest.approx(dict.fromkeys(range(24), 1.0))
    assert all(repair.check_gpus(out, out.gpus, cal, 300, 1, {}))


# ---- the twin's one-GPU lower bound ------------------------------------------------------------------------

def test_one_gpu_bound_is_raised_only_when_no_a_max_serves_the_workload():
    """A best throughput far above any real GPU makes the load formula say 1 for both workloads; the twin
    serves the light one on one GPU and no A_max serves the heavy one, which the verification confirms."""
    cal = load_calibration(FIXTURE)
    ctx = Context(MODEL, fake_evaluator(), 1e9, "given", "test", twin_bound_s=300.0)
    light = fake_workload(8, mean_rate=0.05, ranks=(8,))
    heavy = fake_workload(16, mean_rate=1.5, ranks=(8, 16))
    assert ctx.load_bound(light) == ctx.load_bound(heavy) == 1
    assert ctx.lower_bound(light) == 1
    assert ctx.lower_bound(heavy) == 2
    options = ctx.evaluator.a_max_options(heavy.height, 16)
    for max_loras in options:  # independent check: every one-GPU configuration starves in the verification
        gpu = Gpu(tuple(range(heavy.height)), max_loras, 16, dict(NO_PREDICTION))
        row = verify.verify([Placement(MODEL, "x", heavy, [gpu], 1)], cal, duration_s=300, workers=1).row(0, named=True)
        assert row["starved"] or row["memory_error"]


def test_one_gpu_bound_is_off_by_default_and_memoised(monkeypatch):
    heavy = fake_workload(16, mean_rate=1.5, ranks=(8, 16))
    assert Context(MODEL, fake_evaluator(), 1e9, "given", "test").lower_bound(heavy) == 1
    ctx = Context(MODEL, fake_evaluator(), 1e9, "given", "test", twin_bound_s=300.0)
    calls = []
    real = bounds.one_gpu_serves
    monkeypatch.setattr(bounds, "one_gpu_serves", lambda *a: calls.append(1) or real(*a))
    assert [ctx.lower_bound(heavy) for _ in range(3)] == [2, 2, 2]
    assert len(calls) == 1


def test_shrink_starts_at_the_bound_and_stops_at_the_first_pass():
    """16 GPUs of one adapter each over a bound of 1, and one GPU serves them all: one deal, one twin run."""
    cal = load_calibration(FIXTURE)
    workload = fake_workload(16, mean_rate=0.3, ranks=(8,))
    out = shrink.shrink(spread(workload, 16), fake_evaluator(), cal, duration_s=600, workers=1)
    assert out.num_gpus == 1 and out.notes["shrink_twin_runs"] == 1


@pytest.mark.parametrize(("low", "high"), [(1, 2), (1, 16), (5, 6), (10, 14), (2, 985)])
def test_fewest_finds_every_threshold_within_its_probes(low, high):
    """Exact up to the last probe (bound + 2**(PROBES-1) - 1) or when the probes reach the placement's own
    count, else that count; every count probed once, at most PROBES + PROBES - 1 of them."""
    reach = low + 2 ** (shrink.PROBES - 1) - 1
    for threshold in range(low, high + 1):
        probes = []
        found = shrink.fewest(low, high, lambda c, t=threshold, seen=probes: seen.append(c) or c >= t)
        assert found == (threshold if threshold <= reach or reach >= high else high)
        assert all(low <= c < high for c in probes) and len(set(probes)) == len(probes)
        assert len(probes) <= 2 * shrink.PROBES - 1
