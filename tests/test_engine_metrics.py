"""Step costs read from the engine's own Prometheus histograms (differenced around each run) rather than from
the client's timings: the delta of two scrapes, the per-run means, and a calibration that recovers a known
step model from them, falling back to the client's timings (and saying so) when the engine exported none."""

from __future__ import annotations

import pytest

from adaptwin.profiling import live_loop
from adaptwin.profiling.prometheus import engine_delta

MODEL = 'model_name="m"'


def scrape(prefill_sum: float, prefill_n: int, generated: int, steps: int, success: int) -> str:
    """A /metrics text in vLLM 0.32's form (counters with ``_total``, histograms with buckets)."""
    return "\n".join([
        "# TYPE vllm:request_prefill_time_seconds histogram",
        f'vllm:request_prefill_time_seconds_bucket{{engine="0",le="0.01",{MODEL}}} {prefill_n}.0',
        f'vllm:request_prefill_time_seconds_bucket{{engine="0",le="+Inf",{MODEL}}} {prefill_n}.0',
        f'vllm:request_prefill_time_seconds_count{{engine="0",{MODEL}}} {prefill_n}.0',
        f'vllm:request_prefill_time_seconds_sum{{engine="0",{MODEL}}} {prefill_sum!r}',
        "# TYPE vllm:request_generation_tokens histogram",
        f'vllm:request_generation_tokens_count{{engine="0",{MODEL}}} {prefill_n}.0',
        f'vllm:request_generation_tokens_sum{{engine="0",{MODEL}}} {generated}.0',
        "# TYPE vllm:iteration_tokens_total histogram",
        f'vllm:iteration_tokens_total_count{{engine="0",{MODEL}}} {steps}.0',
        f'vllm:iteration_tokens_total_sum{{engine="0",{MODEL}}} 1.0e+03',
        "# TYPE vllm:request_success_total counter",
        f'vllm:request_success_total{{finished_reason="stop",{MODEL}}} 0.0',
        f'vllm:request_success_total{{finished_reason="length",{MODEL}}} {success}.0',
        "# TYPE process_cpu_seconds_total counter",
        "process_cpu_seconds_total 12.0",
    ]) + "\n"


def test_engine_delta_is_what_each_family_grew_by_over_the_run():
    delta = engine_delta(scrape(0.5, 10, 40, 100, 10), scrape(0.8, 16, 64, 130, 16))
    prefill = delta["vllm:request_prefill_time_seconds"]
    assert prefill["sum"] == pytest.approx(0.3) and prefill["count"] == 6 and prefill["buckets"]["+Inf"] == 6
    assert delta["vllm:request_success_total"] == {"value": 6.0}  # summed over finish reasons
    assert delta["vllm:iteration_tokens_total"]["count"] == 30
    assert "process_cpu_seconds_total" not in delta  # the engine's families only


def test_engine_times_are_per_request_means_and_none_without_a_prefill_histogram():
    delta = {"vllm:request_prefill_time_seconds": {"sum": 0.06, "count": 3},
             "vllm:request_queue_time_seconds": {"sum": 0.003, "count": 3},
             "vllm:request_decode_time_seconds": {"sum": 0.9, "count": 3},
             "vllm:request_generation_tokens": {"sum": 33, "count": 3},
             "vllm:iteration_tokens_total": {"sum": 500, "count": 40}}
    times = live_loop.engine_times(delta)
    assert times == pytest.approx({"requests": 3, "prefill_s": 0.02, "queue_s": 0.001, "decode_step_s": 0.03,
                                   "steps": 40})
    assert live_loop.engine_times({"vllm:request_success_total": {"value": 3.0}}) is None
    assert live_loop.uncontended_engine(times, 2.0)["prefill_s"] == pytest.approx(0.01)
    assert live_loop.uncontended_engine(times, 2.0)["requests"] == 3


# a known engine: the step model the calibration must give back from the engine's times
C, DS, PT, PS, LOAD_S, LORA = 0.002, 0.0001, 0.00001, 0.0015, 0.005, 1.2


def loop() -> live_loop.LoopConfig:
    return live_loop.loop_config_from_dict({
        "harness": {"model": "org/Tiny-Base", "family": "live", "subfamily": "loop", "work_dir": "w",
                    "server": {"max_num_seqs": 16, "max_num_batched_tokens": 2048}, "adapters": {"ranks": [8, 16]},
                    "grid": {"max_loras": [2], "max_cpu_loras": [2], "max_lora_rank": [16]},
                    "benchmark": {"input_len": 6, "output_len": 4, "token_ids": [10, 90]}},
        "calibration": {"model_name": "m", "out": "cal.json", "batches": [1, 4, 16], "crowd_repeats": 1,
                        "long_input_len": 24, "swap_requests": 4, "swap_rate_by_lora": 20.0},
        "validation": {"max_loras": [1, 2], "rate_sets": [[4.0, 2.0]], "total_time_s": 1.0, "out": "v.json"},
    }, "loop.yaml")


def recorded() -> tuple[dict, dict]:
    """Client rows (the admission-inflated timings the client path reads) and the engine's times."""
    name = lambda run, max_loras=2: live_loop.run_name(max_loras, run)  # noqa: E731
    client = {"tpot_median_ms": 9.0, "ttft_median_ms": 30.0, "vllm_version": "0.32.0"}
    rows = {name(r, a): dict(client) for r, a in [("decode_1", 2), ("decode_4", 2), ("decode_16", 2),
                                                   ("spread_16", 2), ("crowd_0", 2), ("long_prompt", 2),
                                                   ("round_robin", 2), ("round_robin", 1)]}
    rows[name("long_prompt")]["ttft_median_ms"] = 31.0
    rows[name("crowd_0")]["ttft_median_ms"] = 150.0
    alone = C + PS + 6 * PT
    engine = {name(f"decode_{n}"): {"requests": n, "prefill_s": 0.01, "decode_step_s": C + DS * n} for n in (1, 4, 16)}
    engine[name("spread_16")] = {"requests": 16, "prefill_s": 0.01, "decode_step_s": (C + DS * 16) * LORA}
    engine[name("round_robin")] = {"requests": 4, "prefill_s": alone, "queue_s": 0.0001}
    engine[name("long_prompt")] = {"requests": 4, "prefill_s": C + PS + 24 * PT, "queue_s": 0.0001}
    engine[name("round_robin", 1)] = {"requests": 4, "prefill_s": alone + LOAD_S * 0.75, "queue_s": 0.0001}
    return rows, engine


def test_calibration_recovers_the_engines_step_terms_from_its_histograms():
    rows, engine = recorded()
    cal = live_loop.build_calibration(rows, loop(), 10_000, 2048, engine=engine)
    step = cal["step"]["params"]
    assert step["intercept"] == pytest.approx(C) and step["decode_seqs"] == pytest.approx(DS)
    assert step["prefill_tokens"] == pytest.approx(PT) and step["prefill_seqs"] == pytest.approx(PS)
    assert cal["lora"]["params"]["y"] == [1.0, pytest.approx(LORA)]
    assert cal["loading"]["params"]["16"]["8"] == pytest.approx(LOAD_S * 1000)
    assert set(cal["sources"]["step_costs"].values()) == {"engine"}


def test_calibration_divides_each_runs_cpu_slowdown_out_of_the_engine_times():
    rows, engine = recorded()
    slowdown = {live_loop.run_name(2, "round_robin"): 2.0}
    alone = live_loop.build_calibration(rows, loop(), 10_000, 2048, slowdown, engine=engine)["fit_quality"]
    assert alone["prefill_alone_ms"] == pytest.approx((C + PS + 6 * PT) / 2 * 1000)


def test_calibration_keeps_the_client_timings_where_the_engine_measured_nothing_and_says_so():
    rows, engine = recorded()
    del engine[live_loop.run_name(2, "long_prompt")]
    cal = live_loop.build_calibration(rows, loop(), 10_000, 2048, engine=engine)
    assert cal["sources"]["step_costs"] == {"decode": "engine", "lora": "engine", "prefill": "client",
                                            "loading": "engine"}
    assert cal["step"]["params"]["prefill_tokens"] == pytest.approx(0.001 / 18)  # (31 - 30) ms over 18 tokens
    client = live_loop.build_calibration(rows, loop(), 10_000, 2048)
    assert set(client["sources"]["step_costs"].values()) == {"client"}
