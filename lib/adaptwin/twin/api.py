"""`simulate`: scenario in, benchmark-exact outputs out (the contract other modules and the CLI call).

Output keys: the contract ones (`total_throughput`, `input_throughput`, `output_throughput`,
`request_throughput`, `arrived_requests`, `finished_requests`, `ttft_{mean,median,p99}_ms`,
`itl_{mean,median,p99}_ms`, `mean_batch_size`, `preemptions`, `adapter_loads`, `ideal_throughput`, `starved`,
`memory_error`, `wall_time_s`) plus `failed_requests` (arrivals the client could not send, `client`),
`steps` (engine steps simulated), `kv_capacity_tokens`, `mean_distinct_adapters` (time average of the distinct
adapters in the running batch over the window, like `mean_batch_size`: what the LoRA cost grows with),
`metrics_render_s` (mean seconds a /metrics render held the API server, 0 without the ``frontend`` calibration
block or the scenario's poller: `frontend`), and `timeseries` when asked (a sample every 2 s: `t_s`,
`num_running`, `num_waiting`, `kv_usage` 0..1). TTFT is the client's: with renders modelled, a request that
meets one waits for its end (`frontend.client_ttft`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from adaptwin.calibration.costs import Calibration, load_calibration
from adaptwin.rules import offered_tokens
from adaptwin.twin import frontend
from adaptwin.twin.arrivals import Workload, make_workload
from adaptwin.twin.engine import TIMESERIES_PERIOD_S, EngineRun, run_engine
from adaptwin.twin.lengths import mean_tokens
from adaptwin.twin.metrics import empty_result, summarize
from adaptwin.twin.scenario import Scenario, ScenarioError, calibration_path, parse_scenario


def simulate(
    scenario: dict[str, Any],
    calibration: Calibration | str | os.PathLike | None = None,
    *,
    timeseries: bool = False,
    check: bool = False,
    zero_wall_time: bool = False,
) -> dict[str, Any]:
    """Simulate one vLLM server for ``scenario`` and return the by-time benchmark's outputs.

    ``calibration`` is a `Calibration` or the path of its JSON file (as given); it defaults to the repository's
    ``data/calibration/<model>.json``. ``timeseries`` adds samples every 2 s
    (like the real poller). ``check`` asserts the engine's invariants at every step (slow).
    Same scenario and seed give byte-identical `adaptwin.io.dumps_json` output except ``wall_time_s``
    (``zero_wall_time`` sets it to 0 for such comparisons)."""
    started = time.perf_counter()
    sc, cal = prepare(scenario, calibration)
    workload = make_workload(sc)
    ideal = ideal_throughput(sc, workload)
    if cal.memory_error(sc.server.max_loras, sc.server.max_lora_rank):
        out = empty_result(ideal, len(workload))
        out.update(preemptions=0, adapter_loads=0, memory_error=True, steps=0, kv_capacity_tokens=0,
                   failed_requests=0, mean_distinct_adapters=0.0, metrics_render_s=0.0)
        if timeseries:
            out["timeseries"] = []
    else:
        run = run_engine(sc, cal, workload, timeseries=timeseries, check=check)
        out = outputs(sc, workload, run, ideal, cal.scrape)
        if timeseries:
            out["timeseries"] = sample_timeseries(run, sc.duration_s)
    out["wall_time_s"] = 0.0 if zero_wall_time else time.perf_counter() - started
    return out


def prepare(scenario: dict[str, Any], calibration: Calibration | str | os.PathLike | None
            ) -> tuple[Scenario, Calibration]:
    """Validate the scenario and pick its calibration (raises `ScenarioError` on a bad scenario,
    `CalibrationError` on a bad calibration file, `TypeError` on a calibration of another type)."""
    if isinstance(calibration, (str, os.PathLike)):
        calibration = load_calibration(Path(calibration))
    sc = parse_scenario(scenario, check_model=calibration is None)
    cal = calibration if calibration is not None else load_calibration(calibration_path(sc.model))
    if cal.model != sc.model:
        raise ScenarioError(f"model: {sc.model!r} does not match the calibration's model {cal.model!r}")
    return sc, cal


def ideal_throughput(sc: Scenario, workload: Workload) -> float:
    """Offered tokens/s: sum of rate x mean(prompt + output); for a replayed trace, its tokens / duration."""
    if sc.arrivals["kind"] == "trace":
        return float((workload.prompts.sum() + workload.outputs.sum()) / sc.duration_s)
    return offered_tokens(sc.rates.sum(), mean_tokens(sc.lengths, sc.model))


def outputs(sc: Scenario, workload: Workload, run: EngineRun, ideal: float,
            scrape: dict[str, float] | None = None) -> dict[str, Any]:
    """Contract outputs of a finished engine run; ``scrape`` (the calibration's ``frontend`` params) models
    the /metrics renders of the scenario's poller."""
    sched, done = run.scheduler, run.scheduler.done
    ttft, render_s = client_ttft(sc, workload, run, scrape)
    special = np.asarray(done.special, dtype=np.float64)
    values = np.concatenate([run.durations, special])
    counts = np.concatenate([run.itl_counts, np.ones(special.size, dtype=np.int64)])
    out = summarize(
        duration=sc.duration_s, arrived=len(workload), finished=len(done.ttft),
        prompt_tokens=done.prompt_tokens, output_tokens=done.output_tokens, ttft=ttft,
        itl_values=values, itl_counts=counts, busy_integral=run.recorder.busy, ideal=ideal,
        offered=float(workload.prompts.sum() + workload.outputs.sum()) / sc.duration_s,
    )
    out.update(
        failed_requests=sched.waiting.n_rejected,
        preemptions=sched.preemptions,
        adapter_loads=sched.loads,
        memory_error=False,
        steps=run.steps,
        kv_capacity_tokens=sched.kv.capacity * sched.kv.block_size,
        mean_distinct_adapters=run.recorder.distinct_busy / sc.duration_s,
        metrics_render_s=render_s,
    )
    return out


def client_ttft(sc: Scenario, workload: Workload, run: EngineRun, scrape: dict[str, float] | None
                ) -> tuple[list[float] | np.ndarray, float]:
    """Finished requests' TTFT as the client sees it, and the mean render time: the engine's TTFT unless
    both the calibration's render cost and the scenario's poller are there (`frontend`)."""
    done, poll = run.scheduler.done, sc.client.metrics_poll_s
    if scrape is None or poll is None or not done.ttft:
        return done.ttft, 0.0
    rec, sched = run.recorder, run.scheduler
    start, end = frontend.step_bounds(np.asarray(rec.seg_t0), np.asarray(rec.seg_k, dtype=np.int64),
                                      np.asarray(rec.seg_d0), np.asarray(rec.seg_beta))
    sent = sched.waiting.rejected == 0  # arrivals the client could not send never reach the server
    times, entries = frontend.label_series(start, end, np.asarray(sched.toggle_step, dtype=np.int64),
                                           np.asarray(sched.toggle_code, dtype=np.int64), workload.times[sent],
                                           workload.adapters[sent], sc.served)
    cost = frontend.ScrapeCost(scrape["base_s"], scrape["per_series_s"], scrape["per_entry_s"])
    starts, ends = frontend.scrape_blocks(times, entries, sc.duration_s, poll, cost)
    arrival = workload.times[np.asarray(done.idx, dtype=np.int64)]
    ttft = frontend.client_ttft(arrival, arrival + np.asarray(done.ttft), starts, ends)
    return ttft, float((ends - starts).mean()) if starts.size else 0.0


def sample_timeseries(run: EngineRun, duration: float) -> list[dict[str, float]]:
    """State every 2 s (t_s, num_running, num_waiting, kv_usage) like the real poller; KV usage is
    interpolated linearly inside a jump of steady steps; idle time reads as an empty server."""
    series = run.recorder.series or []
    capacity = max(1, run.scheduler.kv.capacity)
    starts = np.asarray([s[0] for s in series])
    out = []
    for t in np.arange(0.0, duration, TIMESERIES_PERIOD_S):
        i = int(np.searchsorted(starts, t, side="right")) - 1
        if i < 0 or series[i][1] < t:
            out.append({"t_s": float(t), "num_running": 0, "num_waiting": 0, "kv_usage": 0.0})
            continue
        t0, t1, running, waiting, u0, u1 = series[i]
        frac = (t - t0) / (t1 - t0) if t1 > t0 else 0.0
        out.append({"t_s": float(t), "num_running": running, "num_waiting": waiting,
                    "kv_usage": float((u0 + frac * (u1 - u0)) / capacity)})
    return out
