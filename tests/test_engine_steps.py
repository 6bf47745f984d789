"""The engine's iteration log (vLLM 0.32, ``--enable-logging-iteration-details``): lines parsed into steps,
a run's steps sliced from the server's log by its growth, and the step terms fitted back from steps of a
known engine, a stall of the shared CPU left out."""

from __future__ import annotations

import numpy as np
import pytest

from adaptwin.profiling import engine_steps, live_loop

LINE = ("(APIServer pid=1) INFO 12-02 06:40:01 [loggers.py:200] Iteration({i}): {cr} context requests, {ct} context "
        "tokens, {gr} generation requests, {gt} generation tokens, iteration elapsed time: {ms:.2f} ms, CPU KV "
        "cache usage: 1.0%")
C, DS, PT, PS = 0.004, 0.0002, 0.00004, 0.002


def forward_ms(cr: int, ct: int, gr: int) -> float:
    return 1000 * (C + DS * gr + PT * ct + PS * cr)


def log_text(mixes: list[tuple[int, int, int]], start: int = 0) -> str:
    return "\n".join(LINE.format(i=start + i, cr=cr, ct=ct, gr=gr, gt=gr, ms=forward_ms(cr, ct, gr))
                     for i, (cr, ct, gr) in enumerate(mixes)) + "\n"


def test_iteration_lines_become_steps_and_dummy_steps_are_left_out():
    text = log_text([(1, 64, 0), (0, 0, 4)]) + "INFO Iteration(9): 0 context requests, 0 context tokens, " \
        "0 generation requests, 0 generation tokens, iteration elapsed time: 0.00 ms (dummy), CPU KV cache usage: 0.0%\n"
    steps = engine_steps.parse_steps(text + "INFO other line\n")
    assert steps.shape == (2, 6)
    assert steps[0].tolist() == [0, 1, 64, 0, 0, pytest.approx(C + PT * 64 + PS)]
    assert engine_steps.parse_steps("nothing here").shape == (0, 6)


def test_a_runs_steps_are_what_the_servers_log_grew_by(tmp_path):
    (tmp_path / "server_out.log").write_text(log_text([(1, 64, 0)] * 3))
    sizes = engine_steps.log_sizes(tmp_path)
    with (tmp_path / "server_out.log").open("a") as f:
        f.write(log_text([(0, 0, 8)] * 2, start=3))
    steps = engine_steps.steps_since(tmp_path, sizes)
    assert steps[:, 0].tolist() == [3, 4] and sizes["server_err.log"] == 0


def mixes(rng: np.random.Generator, n: int, least: int = 0) -> list[tuple[int, int, int]]:
    """``n`` steps of random mixes, ``least`` prompts or more in each."""
    out = []
    for _ in range(n):
        cr = int(rng.integers(least, 4))
        out.append((cr, cr * int(rng.integers(16, 512)), int(rng.integers(0, 64))))
    return out


def test_fit_recovers_the_step_terms_and_leaves_a_stall_out():
    steps = engine_steps.parse_steps(log_text(mixes(np.random.default_rng(0), 300)))
    steps[7, 5] += 1.0  # one step held up a second by another process
    fit = engine_steps.fit_steps(steps)
    assert fit["trimmed"] >= 1
    for key, value in {"intercept": C, "decode_seqs": DS, "prefill_tokens": PT, "prefill_seqs": PS}.items():
        assert fit[key] == pytest.approx(value, rel=0.02, abs=2e-5), key


def test_calibration_takes_the_logged_steps_first_and_adds_the_engine_loop_from_the_decode_period():
    from test_engine_metrics import loop, recorded

    rows, engine = recorded()
    rng = np.random.default_rng(1)
    name = lambda run: live_loop.run_name(2, run)  # noqa: E731
    steps = {name(f"decode_{n}"): engine_steps.parse_steps(log_text([(0, 0, n)] * 40 + mixes(rng, 20, least=1)))
             for n in (1, 4, 16)}
    steps[name("crowd_0")] = engine_steps.parse_steps(log_text(mixes(rng, 60)))
    loop_s = 0.001  # the engine loop around the forward, per step
    for n in (1, 4, 16):  # the histograms' decode period: the forward plus the loop
        engine[name(f"decode_{n}")]["decode_step_s"] = forward_ms(0, 0, n) / 1000 + loop_s
    cal = live_loop.build_calibration(rows, loop(), 10_000, 2048, engine=engine, steps=steps)
    step = cal["step"]["params"]
    assert step["intercept"] == pytest.approx(C + loop_s, rel=0.02)
    assert step["decode_seqs"] == pytest.approx(DS, rel=0.02)
    assert step["prefill_tokens"] == pytest.approx(PT, rel=0.02) and step["prefill_seqs"] == pytest.approx(PS, rel=0.02)
    assert cal["sources"]["step_costs"]["prefill"] == "engine iteration log"
    assert "histogram decode period" in cal["sources"]["step_costs"]["decode"]
    # a run without logged decode batches keeps the histogram path
    del steps[name("decode_16")]
    assert live_loop.build_calibration(rows, loop(), 10_000, 2048, engine=engine, steps=steps)[
        "sources"]["step_costs"]["prefill"] == "engine"


def test_engine_loop_is_not_read_from_the_warm_up_requests_steps():
    """The step log's window holds the warm-up request (batch-1 steps before the run), the histograms' does
    not: weighting the decode steps by the requests they decode keeps the run's own batch in charge."""
    from test_engine_metrics import loop, recorded

    rows, engine = recorded()
    name = lambda run: live_loop.run_name(2, run)  # noqa: E731
    warm_up = [(1, 64, 0)] + [(0, 0, 1)] * 31
    steps = {name(f"decode_{n}"): engine_steps.parse_steps(log_text(warm_up + [(n, 64 * n, 0)] + [(0, 0, n)] * 40))
             for n in (1, 4, 16)}
    loop_s = 0.001
    for n in (1, 4, 16):
        engine[name(f"decode_{n}")]["decode_step_s"] = forward_ms(0, 0, n) / 1000 + loop_s
    step = live_loop.build_calibration(rows, loop(), 10_000, 2048, engine=engine, steps=steps)["step"]["params"]
    assert step["intercept"] == pytest.approx(C + loop_s, rel=0.05)
    assert step["decode_seqs"] == pytest.approx(DS, rel=0.05)
    batch, forward = live_loop.token_weighted(steps[name("decode_16")])
    assert batch == pytest.approx((31 + 40 * 16 ** 2) / (31 + 40 * 16))
    assert forward == pytest.approx((31 * forward_ms(0, 0, 1) + 640 * forward_ms(0, 0, 16)) / 671 / 1000)


def test_lora_ratio_compares_median_full_batch_steps_with_the_engine_loop_added_to_both():
    from test_engine_metrics import loop, recorded

    rows, engine = recorded()
    name = lambda run: live_loop.run_name(2, run)  # noqa: E731
    steps = {name(f"decode_{n}"): engine_steps.parse_steps(log_text([(0, 0, n)] * 40)) for n in (1, 4, 16)}
    spread = engine_steps.parse_steps(log_text([(0, 0, 16)] * 40))
    spread[:, 5] *= 1.5
    spread[3, 5] = 5.0  # a stall: the median does not see it
    steps[name("spread_16")] = spread
    loop_s = 0.001
    for n in (1, 4, 16):
        engine[name(f"decode_{n}")]["decode_step_s"] = forward_ms(0, 0, n) / 1000 + loop_s
    cal = live_loop.build_calibration(rows, loop(), 10_000, 2048, engine=engine, steps=steps)
    full = forward_ms(0, 0, 16) / 1000
    assert cal["lora"]["params"]["y"][1] == pytest.approx((1.5 * full + loop_s) / (full + loop_s), rel=1e-3)
    assert cal["sources"]["step_costs"]["lora"].startswith("engine iteration log")


def test_step_inflation_is_the_runs_logged_forward_over_the_profiled_fit(tmp_path):
    steps = engine_steps.parse_steps(log_text(mixes(np.random.default_rng(2), 50)))
    steps[:, 5] *= 2.0  # a serving run whose steps took twice what profiling measured
    path = tmp_path / live_loop.STEPS_NAME
    np.savetxt(path, steps, delimiter=",", header=",".join(engine_steps.COLUMNS), comments="")
    fit = {"intercept": C, "decode_seqs": DS, "prefill_tokens": PT, "prefill_seqs": PS}
    assert live_loop.step_inflation(path, {"fit_quality": {"iteration_fit": fit}}) == pytest.approx(2.0)
    assert live_loop.step_inflation(path, {"fit_quality": {}}) is None
    assert live_loop.step_inflation(tmp_path / "none.csv", {"fit_quality": {"iteration_fit": fit}}) is None
