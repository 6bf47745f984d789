"""Run many independent jobs (twin runs, mostly) in parallel: the one place adaptwin starts workers.

Why one module: the dataset sweep, the twin's validation against real runs and placement's twin checks all
run the same kind of work (a deterministic function of one scenario), and each used to start its own pool.
Here they share one engine, Dask: a `distributed.LocalCluster` of single-threaded worker processes on this
machine by default, or any running Dask scheduler (``scheduler_address``) to scale out to a cluster.

- `map_ordered` returns every result in input order (validation, verification: the table is deterministic);
  `map_unordered` yields ``(index, result)`` as workers finish (the sweep writes finished rows at once, so an
  interruption loses nothing that finished; its resume is the sweep's job, keyed by scenario id).
- With ``workers <= 1`` and no scheduler, or a single job, work runs in this process: no cluster start-up for
  the small checks the command line and the tests make.
- The local cluster is started once per process and per worker count, and reused (placement's repair calls
  the twin dozens of times); it is closed when the process exits or on an interrupt. A remote scheduler is
  connected to for one call at a time and left running.
- ``progress`` is called with the number of jobs just finished (e.g. a tqdm bar's ``update``).
- At most ``4 x workers`` jobs are in flight, so memory stays flat however many jobs there are.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int], None] | None

#: worker count -> (local cluster, client) started by this process
_LOCAL: dict[int, tuple[Any, Any]] = {}


def map_ordered(fn: Callable[[T], R], jobs: Sequence[T], *, workers: int = 1, scheduler_address: str | None = None,
                progress: Progress = None) -> list[R]:
    """``[fn(job) for job in jobs]``, computed by ``workers`` Dask workers (or a remote scheduler)."""
    out: list[Any] = [None] * len(jobs)
    for i, result in map_unordered(fn, jobs, workers=workers, scheduler_address=scheduler_address,
                                   progress=progress):
        out[i] = result
    return out


def map_unordered(fn: Callable[[T], R], jobs: Sequence[T], *, workers: int = 1,
                  scheduler_address: str | None = None, progress: Progress = None) -> Iterator[tuple[int, R]]:
    """``(index, fn(job))`` for every job, in the order they finish."""
    if scheduler_address is None and (workers <= 1 or len(jobs) <= 1):
        for i, job in enumerate(jobs):
            result = fn(job)
            _tick(progress)
            yield i, result
        return
    if scheduler_address:  # someone else's cluster: connect for this call only, leave nothing behind
        from distributed import Client

        with Client(scheduler_address, set_as_default=False) as client:
            yield from _on_dask(client, fn, jobs, workers, progress)
        return
    yield from _on_dask(_local_client(workers), fn, jobs, workers, progress)


def _on_dask(client: Any, fn: Callable[[T], R], jobs: Sequence[T], workers: int,
             progress: Progress) -> Iterator[tuple[int, R]]:
    from distributed import as_completed

    n_workers = len(client.scheduler_info().get("workers", {})) or workers
    todo: Iterable[tuple[int, T]] = iter(enumerate(jobs))
    queue = as_completed(loop=client.loop, with_results=False)
    index: dict[str, int] = {}

    def submit(item: tuple[int, T]) -> None:
        future = client.submit(fn, item[1], pure=False)
        index[future.key] = item[0]
        queue.add(future)

    for item in [x for _, x in zip(range(4 * n_workers), todo, strict=False)]:
        submit(item)
    try:
        for future in queue:
            result = future.result()
            _tick(progress)
            yield index.pop(future.key), result
            nxt = next(todo, None)  # type: ignore[call-overload]
            if nxt is not None:
                submit(nxt)
    except BaseException:
        for future in list(queue.futures):
            future.cancel()
        if any(c is client for _, c in _LOCAL.values()):
            close_local()
        raise


def _local_client(workers: int) -> Any:
    """A client of this process's local cluster of ``workers`` single-threaded processes (started on first
    use and kept for the process's lifetime, so repeated calls do not restart workers)."""
    from distributed import Client, LocalCluster

    if workers not in _LOCAL:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR)
        _LOCAL[workers] = (cluster, Client(cluster, set_as_default=False))
        if len(_LOCAL) == 1:
            atexit.register(close_local)
    return _LOCAL[workers][1]


def close_local() -> None:
    """Close every client and stop every local cluster this process started (at exit, on an interrupt)."""
    while _LOCAL:
        _, (cluster, client) = _LOCAL.popitem()
        try:
            client.close()
            cluster.close()
        except Exception:  # noqa: BLE001 - shutting down: a cluster already gone is fine
            pass


def _tick(progress: Progress) -> None:
    if progress is not None:
        progress(1)
