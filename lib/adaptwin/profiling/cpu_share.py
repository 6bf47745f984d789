"""How much a shared CPU slowed the engine during a run, from the kernel's scheduler statistics.

Why: the live engine shares two cores with its client, its API server and other people's jobs, and the same
engine measured 14 % apart between two repeats of one run. The CPU build runs each step's forward pass in a
worker process (``VLLM::Worker``) whose main thread polls for work between steps, so it is runnable for the
whole run: on a core (``/proc/<pid>/task/<pid>/schedstat``, first field) or waiting for one (second field).
Its share of a core is then on / (on + waiting), whether it computes or polls, and a forward pass that
needs t seconds of a core takes t x (on + waiting) / on: the run's slowdown. Profiling divides it out of the
measured times, and the twin multiplies each validation run's engine costs by that run's own factor, so a
run is compared with the engine it actually had. (Spreading the wait over the steps instead charged the
polling's wait too: 14 s of a light 30 s run. The engine core's main thread, recorded beside it, polls the
worker the same way; summed over every thread of both, helper threads included, the ratio read 2.5-16.)
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

    @property
    def slowdown(self) -> float:
        """(on a core + waiting) / on a core of the worker: 1 on an idle machine, and when nothing was measured."""
        return (self.on_cpu_s + self.waiting_s) / self.on_cpu_s if self.on_cpu_s > 0 else 1.0

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


#: step-model terms of a calibration that are CPU work of the engine, stretched by contention (with loading)
SCALED_STEP_TERMS = ("intercept", "decode_seqs", "prefill_tokens", "prefill_seqs", "context_tokens")


def stretched(calibration: dict[str, Any], slowdown: float) -> dict[str, Any]:
    """The calibration of an engine whose CPU work takes ``slowdown`` times as long (step terms, loading)."""
    out = json.loads(json.dumps(calibration))
    params = out["step"]["params"]
    for key in SCALED_STEP_TERMS:
        if key in params:
            params[key] *= slowdown
    table = out["loading"]["params"]
    out["loading"]["params"] = {s: {r: v * slowdown for r, v in ranks.items()} for s, ranks in table.items()}
    return out
