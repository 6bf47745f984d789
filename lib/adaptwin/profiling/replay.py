"""The twin replaying exactly what a live server was sent: each request's arrival, lengths and adapter.

Why: a trace scenario (``arrivals: trace``) carries arrival times and lengths but not adapters; the twin maps
each request to an adapter again (by rate, seeded). Where it matters that is a different run: with A_max 1
and an overloaded server, the adapter of the first request takes the slot and keeps it while its queue is
never empty, so the live run served only its 16 req/s adapter (1,200 tok/s) while the twin, whose redraw put
the 32 req/s adapter first, served that one (2,400 tok/s). The live schedule knows every request's adapter;
the trace keeps it in a fourth column (``adapter``: the index of the scenario's adapter) that the twin's own
trace reader ignores, and `simulate_replay` runs the twin's engine on that workload.

A shared CPU's slowdown of the run (`cpu_share`) stretches the engine's costs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from adaptwin.io import atomic_write
from adaptwin.profiling.cpu_share import stretched

HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens,adapter"


def write_trace(path: Path, rows: list[tuple[float, int, int, int]]) -> Path:
    """(arrival s, prompt tokens, output tokens, adapter index) rows as a twin trace with the adapter column."""
    lines = [HEADER] + [f"{t!r},{p},{o},{a}" for t, p, o, a in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))


def trace_adapters(path: Path) -> np.ndarray | None:
    """The adapter column of a trace written by `write_trace`, in row order (None for a 3-column trace)."""
    with Path(path).open() as fh:
        if fh.readline().strip() != HEADER:
            return None
    return np.loadtxt(path, delimiter=",", skiprows=1, usecols=3, ndmin=1).astype(np.int64)


def simulate_once(scenario: dict[str, Any], calibration: dict[str, Any]) -> dict[str, Any]:
    """`adaptwin.twin.simulate` with each request's adapter taken from the trace (when it has the column)."""
    from adaptwin.calibration.costs import from_dict
    from adaptwin.twin import simulate
    from adaptwin.twin.api import ideal_throughput, outputs, prepare
    from adaptwin.twin.arrivals import make_workload
    from adaptwin.twin.engine import run_engine

    cal = from_dict(calibration, "live calibration")
    adapters = trace_adapters(Path(scenario["arrivals"]["path"])) if scenario["arrivals"]["kind"] == "trace" else None
    if adapters is None:
        return simulate(scenario, cal)
    sc, cal = prepare(scenario, cal)
    if cal.memory_error(sc.server.max_loras, sc.server.max_lora_rank):
        return simulate(scenario, cal)
    workload = replace(make_workload(sc), adapters=in_workload_order(scenario, adapters))
    run = run_engine(sc, cal, workload)
    return outputs(sc, workload, run, ideal_throughput(sc, workload))


def in_workload_order(scenario: dict[str, Any], adapters: np.ndarray) -> np.ndarray:
    """The trace's adapter column for the requests the twin keeps, in its order: the rows arriving inside
    the window, stably sorted by arrival (as `adaptwin.twin.arrivals.make_workload` takes them)."""
    times = np.loadtxt(scenario["arrivals"]["path"], delimiter=",", skiprows=1, usecols=0, ndmin=1)
    times = times / float(scenario["arrivals"].get("speedup", 1.0))
    rows = np.flatnonzero((times >= 0) & (times < float(scenario["duration_s"])))
    return adapters[rows][np.argsort(times[rows], kind="stable")]


def simulate_replay(scenario: dict[str, Any], calibration: dict[str, Any], slowdown: float = 1.0
                    ) -> dict[str, Any]:
    """The replay (`simulate_once`) on an engine slowed ``slowdown`` times by a shared CPU (`cpu_share`)."""
    result = simulate_once(scenario, stretched(calibration, slowdown) if slowdown != 1.0 else calibration)
    return result | {"cpu_slowdown": slowdown}
