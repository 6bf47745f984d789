"""How long a shared CPU kept the engine waiting during a run, from the kernel's scheduler statistics.

Why: the live engine shares two cores with its client, its API server and other people's jobs. Its steps run
on the engine core's main thread, and every millisecond that thread spends runnable but waiting for a core
(``/proc/<pid>/task/<pid>/schedstat``, second field) is a millisecond added to some step. The same engine
therefore measured 14 % apart between two repeats of one run. Spread over the run's steps, that wait is an
extra cost per step which profiling takes out of the measured step times and which the twin adds back to
each validation run, from that run's own measurement: a run is compared with the engine it actually had.
(Summing the wait over all of the engine's threads does not work: idle helper threads wake up often and
wait long without holding any step up.)
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
ENGINE_NAME = "VLLM::EngineCor"  # the engine core's process title, cut to the kernel's 15 characters


@dataclass
class CpuShare:
    """Seconds the engine core's main thread ran and waited for a core over one run."""

    on_cpu_s: float = 0.0
    waiting_s: float = 0.0


def thread_stats(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns waiting on a run queue) of the main thread of ``pid`` (0, 0 when it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = (PROC / str(pid) / "task" / str(pid) / "schedstat").read_text().split()
        return int(fields[0]), int(fields[1])
    return 0, 0


def engine_pids(group: int) -> list[int]:
    """Processes of process group ``group`` named like vLLM's engine core."""
    engines = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            name, rest = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if int(rest[2]) == group and name == ENGINE_NAME:  # fields after the name: state, ppid, pgrp
                engines.append(int(entry.name))
    return engines


@contextlib.contextmanager
def measured(group: int | None) -> Iterator[CpuShare]:
    """The engine core's `CpuShare` over the ``with`` block (zeros when ``group`` is None: no process)."""
    share = CpuShare()
    pids = engine_pids(group) if group is not None else []
    before = {pid: thread_stats(pid) for pid in pids}
    try:
        yield share
    finally:
        for pid, (run, wait) in before.items():
            run_after, wait_after = thread_stats(pid)
            share.on_cpu_s += max(run_after - run, 0) / 1e9
            share.waiting_s += max(wait_after - wait, 0) / 1e9


def with_step_wait(calibration: dict[str, Any], wait_s: float) -> dict[str, Any]:
    """The calibration of an engine whose every step also waits ``wait_s`` for a core."""
    out = json.loads(json.dumps(calibration))
    out["step"]["params"]["intercept"] += wait_s
    return out


def simulate_waiting(scenario: dict[str, Any], calibration: dict[str, Any], waiting_s: float,
                     rounds: int = 2) -> dict[str, Any]:
    """The twin's run of ``scenario`` on an engine that waited ``waiting_s`` for a core in all: that wait
    spread over the steps the twin takes (a waiting engine takes fewer, larger steps, hence ``rounds``)."""
    from adaptwin.twin import simulate
    from adaptwin.twin.costs import from_dict

    result = simulate(scenario, from_dict(calibration, "live calibration"))
    for _ in range(rounds if waiting_s > 0 else 0):
        per_step = waiting_s / max(int(result.get("steps") or 0), 1)
        result = simulate(scenario, from_dict(with_step_wait(calibration, per_step), "live calibration"))
        result["step_wait_ms"] = per_step * 1000
    return result
