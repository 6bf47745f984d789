"""How long a shared CPU kept the engine waiting during a run, from the kernel's scheduler statistics.

Why: the live engine shares two cores with its client, its API server and other people's jobs, and the same
engine measured 14 % apart between two repeats of one run. The CPU build runs each step's forward pass in a
worker process (``VLLM::Worker``) that the engine core (``VLLM::EngineCore``) hands the scheduled batch to;
every millisecond the worker's main thread spends runnable but waiting for a core
(``/proc/<pid>/task/<pid>/schedstat``, second field) is a millisecond added to some step. Spread over the
run's steps, that wait is an extra cost per step which profiling takes out of the measured step times and
which the twin adds back to each validation run, from that run's own measurement: a run is compared with
the engine it actually had. The engine core's own wait is recorded beside it but not used: its main thread
polls for the worker's output, so it waits for a core (up to 27 s of a 30 s run) mostly while idle-polling,
as do the helper threads of both (summed over every thread the ratio read 2.5-16).
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
WORKER_NAME = "VLLM::Worker"  # the model runner's process (the forward passes)


@dataclass
class CpuShare:
    """Seconds the worker's main thread ran and waited for a core over one run (and the engine core's)."""

    on_cpu_s: float = 0.0
    waiting_s: float = 0.0
    engine_on_cpu_s: float = 0.0
    engine_waiting_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"on_cpu_s": self.on_cpu_s, "waiting_s": self.waiting_s, "engine_on_cpu_s": self.engine_on_cpu_s,
                "engine_waiting_s": self.engine_waiting_s}


def thread_stats(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns waiting on a run queue) of the main thread of ``pid`` (0, 0 when it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = (PROC / str(pid) / "task" / str(pid) / "schedstat").read_text().split()
        return int(fields[0]), int(fields[1])
    return 0, 0


def named_pids(group: int, wanted: str) -> list[int]:
    """Processes of process group ``group`` whose name is ``wanted``."""
    engines = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            name, rest = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if int(rest[2]) == group and name == wanted:  # fields after the name: state, ppid, pgrp
                engines.append(int(entry.name))
    return engines


@contextlib.contextmanager
def measured(group: int | None) -> Iterator[CpuShare]:
    """The `CpuShare` of process group ``group`` over the ``with`` block (zeros when ``group`` is None)."""
    share = CpuShare()
    roles = {"": WORKER_NAME, "engine_": ENGINE_NAME}
    pids = {role: named_pids(group, name) if group is not None else [] for role, name in roles.items()}
    before = {role: [thread_stats(pid) for pid in found] for role, found in pids.items()}
    try:
        yield share
    finally:
        for role, found in pids.items():
            for pid, (run, wait) in zip(found, before[role], strict=True):
                run_after, wait_after = thread_stats(pid)
                field = f"{role}on_cpu_s"
                setattr(share, field, getattr(share, field) + max(run_after - run, 0) / 1e9)
                field = f"{role}waiting_s"
                setattr(share, field, getattr(share, field) + max(wait_after - wait, 0) / 1e9)


def with_step_wait(calibration: dict[str, Any], wait_s: float) -> dict[str, Any]:
    """The calibration of an engine whose every step also waits ``wait_s`` for a core."""
    out = json.loads(json.dumps(calibration))
    out["step"]["params"]["intercept"] += wait_s
    return out
