"""How much a shared CPU held the engine back during a run, from the kernel's scheduler statistics.

Why: the live engine shares two cores with its client, its API server and other people's jobs. A step that
needs 7 ms of CPU lasts 7 ms on an idle machine and 15 ms when the engine waits half the time for a core,
so the same engine measures 14 % apart between two repeats of one run. Linux counts, per thread, the time
spent on a CPU and the time spent runnable but waiting for one (``/proc/<pid>/task/<tid>/schedstat``). Over
a run, (on CPU + waiting) / on CPU of the engine-core process is the factor by which contention stretched
its work: profiling divides it out of the measured costs, and the twin multiplies each validation run's
costs by that run's own factor, so a run is compared with the engine it actually had.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
#: step-model terms of a calibration that are CPU work of the engine, stretched by contention (with loading)
SCALED_STEP_TERMS = ("intercept", "decode_seqs", "prefill_tokens", "prefill_seqs", "context_tokens")
ENGINE_NAME = "VLLM::EngineCor"  # the engine core's process title, cut to the kernel's 15 characters


@dataclass
class CpuShare:
    """CPU time and run-queue wait (seconds) of the engine core over one run."""

    on_cpu_s: float = 0.0
    waiting_s: float = 0.0

    @property
    def slowdown(self) -> float:
        """(on CPU + waiting) / on CPU: 1 on an idle machine; 1 when nothing was measured."""
        return (self.on_cpu_s + self.waiting_s) / self.on_cpu_s if self.on_cpu_s > 0 else 1.0


def process_stats(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns waiting on a run queue) summed over the process's threads (0, 0 when it is gone)."""
    run = wait = 0
    with contextlib.suppress(OSError):
        for task in (PROC / str(pid) / "task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (task / "schedstat").read_text().split()
                run, wait = run + int(fields[0]), wait + int(fields[1])
    return run, wait


def engine_pids(group: int) -> list[int]:
    """Processes of process group ``group`` named like vLLM's engine core (all of the group if none is)."""
    members, engines = [], []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            name, rest = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if int(rest[2]) == group:  # fields after the name: state, ppid, pgrp
                members.append(int(entry.name))
                if name == ENGINE_NAME:
                    engines.append(int(entry.name))
    return engines or members


@contextlib.contextmanager
def measured(group: int | None) -> Iterator[CpuShare]:
    """The engine core's `CpuShare` over the ``with`` block (zeros when ``group`` is None: no process)."""
    share = CpuShare()
    pids = engine_pids(group) if group is not None else []
    before = {pid: process_stats(pid) for pid in pids}
    try:
        yield share
    finally:
        for pid, (run, wait) in before.items():
            run_after, wait_after = process_stats(pid)
            share.on_cpu_s += max(run_after - run, 0) / 1e9
            share.waiting_s += max(wait_after - wait, 0) / 1e9


def contended(calibration: dict[str, Any], slowdown: float) -> dict[str, Any]:
    """The calibration of an engine whose CPU work is stretched by ``slowdown`` (step terms and loading)."""
    out = json.loads(json.dumps(calibration))
    params = out["step"]["params"]
    for key in SCALED_STEP_TERMS:
        if key in params:
            params[key] *= slowdown
    table = out["loading"]["params"]
    out["loading"]["params"] = {s: {r: v * slowdown for r, v in ranks.items()} for s, ranks in table.items()}
    return out
