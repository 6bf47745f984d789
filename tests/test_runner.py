"""`adaptwin.runner`: every parallel twin run goes through it; results must not depend on where they ran."""

from __future__ import annotations

import math

from adaptwin import runner


def square_root(x: float) -> float:
    return math.sqrt(x)


def test_in_process_map_keeps_order_and_counts_progress():
    ticks: list[int] = []
    assert runner.map_ordered(square_root, [4.0, 9.0, 16.0], workers=1, progress=ticks.append) == [2.0, 3.0, 4.0]
    assert ticks == [1, 1, 1]


def test_local_cluster_gives_the_in_process_results_in_input_order():
    jobs = [float(i) for i in range(40)]
    ticks: list[int] = []
    on_dask = runner.map_ordered(square_root, jobs, workers=2, progress=ticks.append)
    assert on_dask == [math.sqrt(x) for x in jobs] and sum(ticks) == len(jobs)
    finished = sorted(i for i, _ in runner.map_unordered(square_root, jobs, workers=2))
    assert finished == list(range(len(jobs)))  # every job exactly once, the cluster reused
    assert len(runner._LOCAL) == 1
    runner.close_local()
    assert not runner._LOCAL
