"""The engine's named invariants (numbered as in `adaptwin.twin.engine`'s docstring), each checked here."""

from __future__ import annotations

import numpy as np
import pytest
from twin_helpers import fixture_calibration, scenario, small_kv, write_trace

from adaptwin.io import dumps_json
from adaptwin.twin import simulate
from adaptwin.twin.api import prepare
from adaptwin.twin.arrivals import make_workload
from adaptwin.twin.engine import run_engine

HIGH = (1.6, 0.8, 0.4)


def engine_run(sc, cal, check=True):
    parsed, cal = prepare(sc, cal)
    workload = make_workload(parsed)
    return parsed, workload, run_engine(parsed, cal, workload, check=check)


@pytest.fixture(scope="module")
def cal(tmp_path_factory):
    return fixture_calibration(tmp_path_factory.mktemp("cal"))[1]


@pytest.fixture(scope="module")
def tight_cal(tmp_path_factory):
    return fixture_calibration(tmp_path_factory.mktemp("cal"), small_kv)[1]


@pytest.fixture(scope="module")
def tight_run(tight_cal):
    """A KV-starved server under a high load: many preemptions, every check on."""
    return engine_run(scenario(max_loras=16, served=24, rates=HIGH, duration=90.0), tight_cal)


def test_1_requests_conserved_per_adapter(tight_run, cal):
    capped = scenario(max_loras=4, served=24, rates=HIGH, duration=120.0, client={"max_connections": 300})
    runs = [tight_run, engine_run(scenario(max_loras=2, served=12, duration=200.0), cal), engine_run(capped, cal)]
    for sc, workload, run in runs:
        arrived = np.bincount(workload.adapters, minlength=sc.served)
        finished = np.asarray(run.scheduler.done.per_adapter)
        unfinished = np.asarray(run.scheduler.unfinished_per_adapter(sc.duration_s))
        waiting = run.scheduler.waiting
        failed = np.bincount(workload.adapters[waiting.rejected[:len(workload)] == 1], minlength=sc.served)
        assert arrived.sum() > 100
        assert finished.sum() > 0 and unfinished.sum() > 0
        np.testing.assert_array_equal(arrived, finished + unfinished + failed)
    assert runs[2][2].scheduler.waiting.n_rejected > 1000  # the client's port limit was hit


def test_2_tokens_conserved(tight_run):
    _, workload, run = tight_run
    done = run.scheduler.done
    idx = np.asarray(done.idx)
    # the finished requests' own lengths, looked up independently in the workload
    assert done.output_tokens == int(workload.outputs[idx].sum())
    assert done.prompt_tokens == int(workload.prompts[idx].sum())
    # every finished request contributed output - 1 inter-token gaps (check mode also asserts it per request)
    assert int(run.itl_counts.sum()) + len(done.special) == int((workload.outputs[idx] - 1).sum())
    assert len(done.special) > 0  # preempted requests resumed and finished


def test_3_kv_cache_never_exceeds_capacity(tight_run):
    # check mode asserts, at every step, used blocks <= capacity and = the blocks the running requests hold
    _, _, run = tight_run
    assert run.scheduler.preemptions > 20
    assert 0 <= run.scheduler.kv.used <= run.scheduler.kv.capacity


def test_4_never_more_than_amax_adapters(tight_run, cal):
    # check mode asserts it at every step; the runs must actually rotate adapters through the slots
    sc, _, run = engine_run(scenario(max_loras=2, served=12, duration=200.0), cal)
    assert run.scheduler.loads > 10
    assert run.scheduler.n_active <= sc.server.max_loras
    assert tight_run[2].scheduler.loads > 0


def test_5_same_seed_same_json(cal):
    sc = scenario(max_loras=4, served=24, duration=200.0, seed=7, arrivals={"kind": "unpredictable"})
    a = dumps_json(simulate(sc, cal, zero_wall_time=True, timeseries=True))
    b = dumps_json(simulate(sc, cal, zero_wall_time=True, timeseries=True))
    c = dumps_json(simulate(dict(sc, seed=8), cal, zero_wall_time=True, timeseries=True))
    assert a == b
    assert a != c


def test_6_zero_load_zero_throughput(cal):
    out = simulate(scenario(rates=(0.0, 0.0, 0.0)), cal)
    assert out["arrived_requests"] == out["finished_requests"] == out["steps"] == 0
    assert out["total_throughput"] == out["output_throughput"] == 0.0
    assert out["ideal_throughput"] == 0.0 and out["mean_batch_size"] == 0.0


def test_7_throughput_never_exceeds_offered(tight_run, cal):
    for _, workload, run in (tight_run, engine_run(scenario(max_loras=8, served=24, duration=300.0), cal, False)):
        done = run.scheduler.done
        assert 0 < done.prompt_tokens + done.output_tokens <= offered_tokens(workload)
    # light load: everything that arrived early enough finishes, so throughput = realised offered load
    sc, workload, run = engine_run(scenario(max_loras=24, served=24, rates=(0.05, 0.05, 0.05), duration=600.0), cal,
                                   False)
    early = workload.times < sc.duration_s - 60.0
    done = run.scheduler.done
    assert set(np.flatnonzero(early)) <= set(done.idx)
    early_tokens = int(workload.prompts[early].sum() + workload.outputs[early].sum())
    assert early_tokens <= done.prompt_tokens + done.output_tokens <= offered_tokens(workload)


def offered_tokens(workload) -> int:
    return int(workload.prompts.sum() + workload.outputs.sum())


def test_9_loads_only_when_slots_are_short(cal):
    # (More slots do NOT always mean fewer loads under vLLM's rule: with 2 slots the active adapters keep
    # their slot while their queues refill, the others starve, and few loads happen.)
    for max_loras in (2, 8):
        _, _, run = engine_run(scenario(max_loras=max_loras, served=24, duration=300.0), cal, False)
        assert 0 < run.scheduler.loads <= run.scheduler.admissions
    _, _, run = engine_run(scenario(max_loras=24, served=24, duration=300.0), cal, False)
    assert run.scheduler.loads == 0 and run.scheduler.admissions > 100


def test_9_bigger_kv_never_more_preemptions(tmp_path):
    sc = scenario(max_loras=16, served=24, rates=HIGH, duration=90.0)
    small = simulate(sc, fixture_calibration(tmp_path, small_kv, "small.json")[1])
    big = simulate(sc, fixture_calibration(tmp_path, None, "big.json")[1])
    assert small["preemptions"] > big["preemptions"] == 0
    assert small["kv_capacity_tokens"] < big["kv_capacity_tokens"]


def test_memory_error_serves_nothing(cal):
    # 256 slots of rank 16 leave 306000 - 46 * 4096 = 117,584 tokens < max_model_len 131,072
    out = simulate(scenario(max_loras=256, served=256, duration=60.0), cal)
    assert out["memory_error"] is True
    assert out["finished_requests"] == 0 and out["total_throughput"] == 0.0
    assert out["arrived_requests"] > 0 and out["ideal_throughput"] > 0 and out["starved"] is True


#: the calibrated LoRA form (seconds per step: launch + per distinct adapter + per slot x token)
SLOTS = {"form": "slots", "params": {"launch": 0.006, "distinct_adapters": 3.2e-4, "slot_token": 5.7e-7}}


@pytest.mark.parametrize("lora", [None, SLOTS], ids=["factor", "slots"])
def test_single_request_timing_matches_cost_model(tmp_path, lora):
    """One request alone: TTFT = one prefill step, ITLs = decode steps whose context grows by one token."""
    def edit(data):
        data["step"]["params"]["context_tokens"] = 2.0e-6
        if lora:
            data["lora"] = lora

    _, cal = fixture_calibration(tmp_path, edit)
    trace = write_trace(tmp_path / "one.csv", [(1.0, 100, 5)])
    sc = scenario(max_loras=1, served=1, duration=10.0, adapters=[{"count": 1, "rank": 8, "rate": 1.0}],
                  arrivals={"kind": "trace", "path": str(trace)}, lengths={"kind": "trace", "path": str(trace)})
    out = simulate(sc, cal)
    cal = cal.for_server(1)  # what the engine evaluates: the server's slots bound
    sched = cal.scheduler_time(1, 0)
    ttft = cal.step_time(0, 100, 0, 1, prefill_seqs=1) + sched
    itls = [cal.step_time(1, 0, 100 + j, 1) + sched for j in range(4)]
    assert out["finished_requests"] == 1 and out["adapter_loads"] == 0
    assert out["ttft_mean_ms"] == pytest.approx(ttft * 1000, rel=1e-9)
    assert out["itl_mean_ms"] == pytest.approx(np.mean(itls) * 1000, rel=1e-9)
    assert out["itl_p99_ms"] == pytest.approx(np.percentile(itls, 99) * 1000, rel=1e-9)
    assert out["output_throughput"] == pytest.approx(5 / 10.0)


def test_lora_admission_skips_inactive_adapters(tmp_path, cal):
    """A_max = 1: while adapter 0 runs, adapter 1's request waits and a later adapter-0 request overtakes it."""
    rows = [(0.0, 50, 200), (0.1, 50, 5), (0.2, 50, 5)]  # round_robin: adapters 0, 1, 0
    trace = write_trace(tmp_path / "skip.csv", rows)
    sc = scenario(max_loras=1, served=2, duration=60.0, adapters=[{"count": 2, "rank": 8, "rate": 1.0}],
                  arrivals={"kind": "trace", "path": str(trace), "mapping": "round_robin"},
                  lengths={"kind": "trace", "path": str(trace)})
    _, workload, run = engine_run(sc, cal)
    done = run.scheduler.done
    first_token = {i: workload.times[i] + t for i, t in zip(done.idx, done.ttft, strict=True)}
    assert sorted(first_token) == [0, 1, 2]
    assert first_token[2] < first_token[1]
    assert done.idx.index(1) == 2  # adapter 1 runs only after adapter 0 left the batch
    assert run.scheduler.loads == 2  # slot preloaded with adapter 1; load 0, then 1 again


@pytest.mark.parametrize("lora", [None, SLOTS], ids=["factor", "slots"])
def test_8_jumps_over_steady_steps_change_nothing(tmp_path, lora):
    """Advancing k identical decode steps at once (arithmetic series, block phases) = k single steps.
    (With a per-waiting-request scheduler cost, a jump keeps the waiting count of its start while single steps
    see inadmissible arrivals add to it: a documented approximation, so that cost is 0 here.)"""
    def edit(data):
        data["step"]["params"]["context_tokens"] = 1.0e-7
        small_kv(data)
        if lora:
            data["lora"] = lora

    _, cal = fixture_calibration(tmp_path, edit)
    sc, cal = prepare(scenario(max_loras=16, served=24, rates=HIGH, duration=60.0), cal)
    workload = make_workload(sc)
    fast = run_engine(sc, cal, workload)
    slow = run_engine(sc, cal, workload, jumps=False)
    assert fast.steps == slow.steps == len(slow.recorder.seg_k) > len(fast.recorder.seg_k) * 1.3  # jumps happened
    for attr in ("preemptions", "loads", "admissions"):
        assert getattr(fast.scheduler, attr) == getattr(slow.scheduler, attr)
    assert fast.scheduler.preemptions > 0
    assert fast.scheduler.done.idx == slow.scheduler.done.idx
    np.testing.assert_allclose(fast.durations, slow.durations, rtol=1e-9)
    np.testing.assert_array_equal(fast.itl_counts, slow.itl_counts)
    np.testing.assert_allclose(fast.scheduler.done.ttft, slow.scheduler.done.ttft, rtol=1e-9, atol=1e-9)


def test_load_evicts_untouched_batch_adapters_first():
    """vLLM visits the batch's adapters in a fixed order and evicts the LRU slot at each miss: when all
    slots held the previous batch, the batch adapters visited after the new one are evicted and copied
    back before the chain reaches the adapter that left."""
    from adaptwin.twin.adapter_cache import GpuSlots

    def after_leaving(left: int) -> list[int]:
        slots = GpuSlots(3, 4, order=[0, 1, 2, 3])  # slots start with adapters 1, 2, 3
        active = [0, 0, 0, 0]
        for a in (1, 2, 3):
            active[a] = 1
            assert not slots.activate(a, active, 0)
        active[left] = 0
        slots.release(left, 0)
        active[0] = 1
        assert slots.activate(0, active, 1)
        return slots.reloaded

    assert after_leaving(3) == [1, 2]  # 0 evicts 1, 1 evicts 2, 2 evicts 3: three copies
    assert after_leaving(1) == []  # the adapter that left is the oldest untouched: one copy
    assert after_leaving(2) == [1]


def test_reload_chain_is_the_literal_walk():
    """`GpuSlots._chain` (one pass) evicts the same adapters, in the same order, as walking vLLM's loads one
    by one: each time the oldest untouched entry after the previous eviction, until the victim (the adapters
    joined at this step listed as `activate` lists them)."""
    from adaptwin.twin.adapter_cache import GpuSlots

    def walk(slots: GpuSlots, a: int, victim: tuple[int, int], active: list[int], step: int) -> list[int]:
        later = sorted(((step - 1 if slots.joined_at[b] < step else slots.last_used[b]), slots.order[b], b)
                       for b in range(len(active)) if active[b] and slots.in_slot[b] and b != a
                       and slots.loaded_at[b] < step and slots.order[b] > slots.order[a])
        later.sort(key=lambda c: c[1])
        chain, i = [], 0
        while i < len(later):
            key, place, b = min(later[i:])
            if (key, place) > victim:
                break
            chain.append(b)
            i = next(j for j, c in enumerate(later) if c[2] == b) + 1
        return chain

    rng, long_chains = np.random.default_rng(5), 0
    for _ in range(600):
        served = int(rng.integers(2, 40))
        slots = GpuSlots(served, served, seed=int(rng.integers(1000)))
        step = int(rng.integers(2, 30))
        active = (rng.random(served) < 0.6).astype(int).tolist()
        slots.joined_at = rng.integers(0, step + 1, served).tolist()
        slots.last_used = rng.integers(-5, step, served).tolist()
        slots.loaded_at = rng.integers(-1, step + 1, served).tolist()
        slots.in_slot = bytearray((rng.random(served) < 0.8).astype(np.uint8).tobytes())
        slots.joined_step = step
        slots.joined_now = [int(b) for b in rng.permutation(served) if slots.joined_at[b] == step]
        a = int(rng.integers(served))
        recency = step - 1 if rng.random() < 0.5 else int(rng.integers(-5, step))  # at most step - 1
        victim = (recency, int(rng.integers(served)))
        chain = slots._chain(a, victim, active, step)
        assert chain == walk(slots, a, victim, active, step)
        long_chains += len(chain) > 1
    assert long_chains > 30  # the cases test something
