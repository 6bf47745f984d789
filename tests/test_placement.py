"""Placement methods on an analytic stand-in surrogate (tests/test_placement_fakes.py): Algorithm 1 exactly,
safety, the memory cap, coverage of every adapter, the baselines' defining rules, the latency variant."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_placement_fakes import BASE_CAPACITY, fake_evaluator, fake_workload

from adaptwin.placement import baselines, greedy, latency
from adaptwin.placement.api import METHODS, Context, place, resolve_margin
from adaptwin.placement.core import PlacementError


def context(**kwargs) -> Context:
    return Context("llama-3.1-8b-instruct", fake_evaluator(**kwargs), BASE_CAPACITY, "fake", "test")


def naive_greedy(workload: pl.DataFrame, ev) -> list[tuple[list[int], int]]:
    """Algorithm 1 one adapter at a time, one surrogate call per step (the reference the batched one must match)."""
    ranks, rates = workload["rank"].to_numpy(), workload["rate"].to_numpy()
    gpus, current, a_cur = [], [], None
    for i in greedy.rank_order(ranks, rates):
        trial = [*current, int(i)]
        if len(trial) > ev.max_served:
            gpus.append((current, a_cur))
            trial, a_cur = [int(i)], None
        options = ev.a_max_options(len(trial), int(ranks[trial[0]]))
        res = ev.evaluate([(ranks[trial], rates[trial])], [options])
        pos = 0 if a_cur is None else max(j for j, a in enumerate(options) if a <= a_cur or j == 0)
        while pos + 1 < len(options) and res["total_throughput"][pos + 1] > res["total_throughput"][pos]:
            pos += 1
        if res["ok"][pos] or not current:
            current, a_cur = trial, options[pos]
            if not res["ok"][pos]:  # a lone unsafe adapter keeps its own GPU
                gpus.append((current, a_cur))
                current, a_cur = [], None
            continue
        gpus.append((current, a_cur))  # roll back the pending adapter, open a new GPU with it
        options = ev.a_max_options(1, int(ranks[i]))
        res = ev.evaluate([(ranks[[i]], rates[[i]])], [options])
        pos = 0
        while pos + 1 < len(options) and res["total_throughput"][pos + 1] > res["total_throughput"][pos]:
            pos += 1
        current, a_cur = [int(i)], options[pos]
    if current:
        gpus.append((current, a_cur))
    return gpus


def test_rank_order_groups_largest_rank_first_and_alternates_rates():
    ranks = np.array([8, 16, 8, 16, 8, 8])
    rates = np.array([0.1, 0.5, 0.4, 0.2, 0.3, 0.2])
    order = greedy.rank_order(ranks, rates).tolist()
    assert order == [1, 3, 2, 0, 4, 5]  # rank 16: 0.5, 0.2; rank 8: 0.4, 0.1, 0.3, 0.2 (tie by row)


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_greedy_is_exactly_algorithm_1(seed):
    workload = fake_workload(220, seed=seed, mean_rate=0.3)
    ev = fake_evaluator(max_served=96)
    fast, _ = greedy.place_greedy(workload, ev, extensions=False)
    reference = naive_greedy(workload, fake_evaluator(max_served=96))
    assert [(list(g.members), g.max_loras) for g in fast] == reference


@pytest.mark.parametrize("method", METHODS)
def test_every_method_places_every_adapter_with_a_startable_configuration(method):
    workload = fake_workload(180, mean_rate=0.3)
    ctx = context()
    p = place(workload, ctx, method)
    cal = ctx.evaluator.calibration
    share = np.zeros(workload.height)
    for gpu in p.gpus:
        for pos, i in enumerate(gpu.members):
            share[i] += gpu.share_of(pos)
        ranks = workload["rank"].to_numpy()[list(gpu.members)]
        assert gpu.max_lora_rank == ranks.max()
        assert 1 <= gpu.max_loras <= len(gpu.members)
        assert not cal.memory_error(gpu.max_loras, gpu.max_lora_rank), (method, gpu.max_loras)
    np.testing.assert_allclose(share, 1.0)
    assert p.lower_bound_gpus == ctx.lower_bound(workload)


def test_proposed_is_safe_and_never_uses_more_gpus_than_a_safe_baseline():
    for seed, n in ((0, 150), (3, 400)):
        workload = fake_workload(n, seed=seed, mean_rate=12.0 / n * 3, ranks=(8, 16))
        ctx = context()
        proposed = place(workload, ctx, "greedy")
        assert all(g.safe for g in proposed.gpus)
        assert proposed.num_gpus >= proposed.lower_bound_gpus
        for method in ("ffd", "dlora", "loraserve", "round-robin"):
            other = place(workload, ctx, method)
            if all(g.safe for g in other.gpus):
                assert proposed.num_gpus <= other.num_gpus, (seed, method)


def test_round_robin_uses_the_minimum_count_and_starves_when_it_is_too_few():
    workload = fake_workload(300, mean_rate=0.3)
    p = place(workload, context(), "round-robin")
    assert p.num_gpus == p.lower_bound_gpus
    assert not all(g.safe for g in p.gpus)


def test_a_larger_margin_never_packs_more_tightly():
    workload = fake_workload(300, mean_rate=0.25)
    counts = [place(workload, context(margin=m), "greedy").num_gpus for m in (0.0, 0.05, 0.08)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_fast_variant_is_safe_and_close_to_the_exact_one():
    workload = fake_workload(600, mean_rate=0.1)
    ctx = context()
    exact, fast = place(workload, ctx, "greedy"), place(workload, ctx, "greedy-fast")
    assert all(g.safe for g in fast.gpus)
    assert abs(fast.num_gpus - exact.num_gpus) <= 1


def test_latency_variant_keeps_the_count_and_lowers_predicted_itl():
    workload = fake_workload(200, mean_rate=0.15, ranks=(8,))
    ctx = context()
    base = place(workload, ctx, "greedy")
    spread = place(workload, ctx, "greedy-latency")
    assert spread.num_gpus <= base.num_gpus and all(g.safe for g in spread.gpus)
    worst = [max(g.predicted["itl_mean_ms"] for g in p.gpus) for p in (base, spread)]
    assert worst[1] < worst[0]


def test_latency_falls_back_to_retuned_greedy_groups_when_spreading_fails():
    workload = fake_workload(60, mean_rate=0.3, ranks=(8,))
    ev = fake_evaluator()
    groups = [list(range(0, 30)), list(range(30, 60))]
    gpus = latency.retune(workload, ev, groups)
    assert [list(g.members) for g in gpus] == groups


def test_loraserve_apportions_and_splits_adapters_fractionally():
    assert baselines.apportion({8: 1.4, 16: 1.4, 32: 0.2}) == {8: 2, 16: 1, 32: 1}
    bins = baselines.fractional_pack(np.array([3.0, 1.0, 1.0, 1.0]), 2)
    loads = [sum(s * [3.0, 1.0, 1.0, 1.0][i] for i, s in b) for b in bins]
    assert loads == pytest.approx([3.0, 3.0])
    assert bins[0] == [(0, 1.0)]


def test_dlora_balances_load_over_the_fewest_safe_gpus():
    groups = baselines.balance(np.array([5.0, 4.0, 3.0, 3.0, 1.0]), 2, 10)
    assert sorted(groups) == [[0, 3], [1, 2, 4]]
    workload = fake_workload(200, mean_rate=0.2, ranks=(8,))
    p = place(workload, context(), "dlora")
    assert all(g.safe for g in p.gpus)
    fewer = baselines.build_gpus(workload, context().evaluator, baselines.balance(
        workload["rate"].to_numpy(), p.num_gpus - 1, 576))
    assert not all(g.safe for g in fewer)


def test_unknown_method_and_negative_margin_are_refused():
    with pytest.raises(PlacementError, match="method 'best'"):
        place(fake_workload(10), context(), "best")
    with pytest.raises(PlacementError, match="margin"):
        resolve_margin(-0.1, None, "m")
    assert resolve_margin("auto", None, "m")[1].startswith("default")


def test_margin_is_read_from_the_surrogates_real_run_error(tmp_path):
    from adaptwin.io import write_json

    path = write_json(tmp_path / "surrogates.json",
                      {"llama-3.1-8b-instruct": {"real_runs": {"throughput_smape_pct": 4.2}}})
    margin, source = resolve_margin("auto", path, "llama-3.1-8b-instruct")
    assert margin == pytest.approx(0.042) and "surrogates.json" in source


def test_placement_is_deterministic():
    workload = fake_workload(250, mean_rate=0.2)
    a, b = (place(workload, context(), "greedy").to_json() for _ in range(2))
    assert a == b


def test_prefix_features_match_the_surrogates_feature_definition():
    from adaptwin.placement.core import prefix_features
    from adaptwin.surrogate.features import PAPER_FEATURES, gpu_features

    rng = np.random.default_rng(7)
    ranks = rng.choice([8, 16, 32], 300)
    rates = rng.pareto(1.3, 300) * 0.05
    ks = np.array([1, 2, 17, 150, 300])
    fast = prefix_features(ranks, rates, ks)
    for j, k in enumerate(ks):
        reference = gpu_features(ranks[:k], rates[:k], 8)
        for name in PAPER_FEATURES:
            if name != "adapter_slots":
                assert fast[name][j] == pytest.approx(reference[name], rel=1e-9, abs=1e-12), (name, k)


def test_group_stats_features_match_the_surrogates_feature_definition():
    from adaptwin.placement.core import GroupStats
    from adaptwin.surrogate.features import PAPER_FEATURES, gpu_features

    rng = np.random.default_rng(3)
    stats, members = GroupStats.empty(3), [[], [], []]
    ranks, rates = rng.choice([8, 16, 32], 60), rng.uniform(0, 0.4, 60)
    for i in range(57):
        g = i % 3
        stats.add(g, ranks[i], rates[i])
        members[g].append(i)
    feats = stats.with_adapter(np.array([0, 2]), ranks[59], rates[59])
    for j, g in enumerate((0, 2)):
        idx = [*members[g], 59]
        reference = gpu_features(ranks[idx], rates[idx], 8)
        for name in PAPER_FEATURES:
            if name != "adapter_slots":
                assert feats[name][j] == pytest.approx(reference[name], rel=1e-9, abs=1e-12), name


def test_rebalance_keeps_gpus_safe_and_lowers_the_worst_itl():
    workload = fake_workload(300, mean_rate=0.12, ranks=(8, 16))
    ev = fake_evaluator()
    base, _ = greedy.place_greedy(workload, ev)
    groups = [list(g.members) for g in base]
    groups.append([groups[0].pop()])  # one more GPU, almost empty: room to spread into
    before = latency.retune(workload, ev, groups)
    moved = latency.rebalance(workload, ev, groups)
    assert len(moved) == len(groups) and all(g.safe for g in moved)
    assert sorted(i for g in moved for i in g.members) == list(range(300))
    worst = [max(g.predicted["itl_mean_ms"] for g in gpus) for gpus in (before, moved)]
    assert worst[1] < worst[0] - 1.0


def test_consolidation_empties_a_gpu_the_others_can_absorb_and_stays_safe():
    workload = fake_workload(200, mean_rate=0.1, ranks=(8, 16))
    ev = fake_evaluator()
    base, _ = greedy.place_greedy(workload, ev, extensions=False)
    groups = [list(g.members) for g in base]
    groups.append([groups[0].pop()])  # a needless extra GPU holding one light adapter
    spread = greedy.configure(groups, workload["rank"].to_numpy(), workload["rate"].to_numpy(), ev)
    drained, alone = greedy.drain(spread, [], workload["rank"].to_numpy(), workload["rate"].to_numpy(), ev)
    assert len(drained) < len(spread) and not alone and all(g.safe for g in drained)
    assert sorted(i for g in drained for i in g.members) == list(range(200))


class LoneAdapterUnsafe:
    """The fake surrogate, except that it calls every one-adapter GPU starved: the noisy verdict a real
    surrogate can give on one light adapter (its throughput is Poisson luck)."""

    def __init__(self):
        from test_placement_fakes import FakePredictor

        self.inner = FakePredictor()

    def predict(self, features: pl.DataFrame) -> pl.DataFrame:
        out = self.inner.predict(features)
        lone = features["served_adapters"].to_numpy() == 1
        p = np.where(lone, 0.99, out["starvation_probability"].to_numpy())
        return out.with_columns(pl.Series("starvation_probability", p), pl.Series("starved", p > 0.5))


def lone_unsafe_evaluator():
    ev = fake_evaluator()
    ev.predictor = LoneAdapterUnsafe()
    return ev


@pytest.mark.parametrize("fast", [False, True])
def test_one_unsafe_verdict_on_a_lone_adapter_does_not_close_the_gpu(fast):
    workload = fake_workload(60, mean_rate=0.05, ranks=(8,))
    ev = lone_unsafe_evaluator()
    with_extensions, _ = greedy.place_greedy(workload, ev, fast=fast)
    assert len(with_extensions[0].members) > 10 and all(g.safe for g in with_extensions)
    as_published, _ = greedy.place_greedy(workload, lone_unsafe_evaluator(), fast=fast, extensions=False)
    assert len(as_published[0].members) == 1  # Algorithm 1 as published stops at the first unsafe prefix


def test_loraserve_operating_point_survives_an_unsafe_verdict_on_one_adapter():
    capacity, max_loras = baselines.operating_point(8, 0.05, lone_unsafe_evaluator())
    reference, _ = baselines.operating_point(8, 0.05, fake_evaluator())
    assert capacity == pytest.approx(reference) and capacity > 10 * 0.05
