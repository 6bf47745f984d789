"""`simulate`: scenario in, benchmark-exact outputs out (the contract other modules and the CLI call).

Output keys: the contract ones (`total_throughput`, `input_throughput`, `output_throughput`,
`request_throughput`, `arrived_requests`, `finished_requests`, `ttft_{mean,median,p99}_ms`,
`itl_{mean,median,p99}_ms`, `mean_batch_size`, `preemptions`, `adapter_loads`, `ideal_throughput`, `starved`,
`memory_error`, `wall_time_s`) plus `failed_requests` (arrivals the client could not send, `client`),
`steps` (engine steps simulated), `kv_capacity_tokens`, `mean_distinct_adapters` (time average of the distinct
adapters in the running batch over the window, like `mean_batch_size`: what the LoRA cost grows with), and `timeseries` when asked (a sample every 2 s:
`t_s`, `num_running`, `num_waiting`, `kv_usage` 0..1).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from adaptwin.calibration.costs import Calibration, load_calibration
from adaptwin.rules import offered_tokens
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
                   failed_requests=0, mean_distinct_adapters=0.0)
        if timeseries:
            out["timeseries"] = []
    else:
        run = run_engine(sc, cal, workload, timeseries=timeseries, check=check)
        out = outputs(sc, workload, run, ideal)
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


def outputs(sc: Scenario, workload: Workload, run: EngineRun, ideal: float) -> dict[str, Any]:
    """Contract outputs of a finished engine run."""
    sched, done = run.scheduler, run.scheduler.done
    special = np.asarray(done.special, dtype=np.float64)
    values = np.concatenate([run.durations, special])
    counts = np.concatenate([run.itl_counts, np.ones(special.size, dtype=np.int64)])
    out = summarize(
        duration=sc.duration_s, arrived=len(workload), finished=len(done.ttft),
        prompt_tokens=done.prompt_tokens, output_tokens=done.output_tokens, ttft=done.ttft,
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
    )
    return out


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
