"""The ``*.npy`` time series of one run (data card 4.5, 6): load, align, repair, and cut to the window.

Repairs, in order:
1. arrays of unequal length are cut to the shortest (alignment of the extra samples is unknown) and the
   run is flagged ``length_mismatch``;
2. a cumulative counter that reads 0 after a positive value is an overflow sample (the poller could not
   parse Prometheus' ``1.0e+06`` notation) and becomes null (flag ``counter_overflow``);
3. the benchmark window is the JSON ``start_time``/``end_time`` when present, else estimated from the end
   of activity and the summary duration (see :func:`estimate_window` and adaptwin.measurements.schema).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

#: npy file -> timeseries column.
NPY_COLUMNS: dict[str, str] = {
    "num_running.npy": "num_running",
    "num_waiting.npy": "num_waiting",
    "num_preempted.npy": "num_preempted",
    "gpu_cache_usage_perc.npy": "gpu_cache_usage",
    "finished.npy": "finished",
    "processed_tokens_prompt.npy": "prompt_tokens_total",
    "processed_tokens_token.npy": "generation_tokens_total",
    "num_preempted_workload.npy": "preempted_workload",
}
COUNTERS = ("num_preempted", "finished", "prompt_tokens_total", "generation_tokens_total", "preempted_workload")
GAUGES_INT = ("num_running", "num_waiting")


@dataclass
class Series:
    """The repaired arrays of one run (``values`` maps column -> float array with NaN for null)."""

    time: np.ndarray
    values: dict[str, np.ndarray]
    flags: list[str] = field(default_factory=list)


def load_series(folder: Path) -> tuple[Series | None, list[str]]:
    """Read the arrays of ``folder``: (series, problems). Series is None without a readable ``time.npy``.

    An unreadable array is skipped (its column stays null) and reported in ``problems`` (one message per
    file, naming it); an unreadable ``time.npy`` makes the whole series unusable.
    """
    problems: list[str] = []
    time_path = folder / "time.npy"
    if not time_path.exists():
        return None, problems
    time = _read(time_path, problems)
    if time is None:
        return None, problems
    arrays: dict[str, np.ndarray] = {}
    for name, column in NPY_COLUMNS.items():
        path = folder / name
        if path.exists() and (a := _read(path, problems)) is not None:
            arrays[column] = a
    series = Series(time, arrays)
    if problems:
        series.flags.append("npy_unreadable")
    _truncate(series)
    _null_overflow(series)
    return series, problems


def _read(path: Path, problems: list[str]) -> np.ndarray | None:
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        problems.append(f"{path}: unreadable .npy ({type(exc).__name__}: {exc})")
        return None
    if a.ndim != 1:
        problems.append(f"{path}: expected a 1-D array, got shape {a.shape}")
        return None
    return a.astype(np.float64, copy=False)


def _truncate(series: Series) -> None:
    lengths = [len(series.time), *(len(a) for a in series.values.values())]
    n = min(lengths)
    if len(set(lengths)) > 1:
        series.flags.append("length_mismatch")
        series.time = series.time[:n]
        series.values = {k: a[:n] for k, a in series.values.items()}


def _null_overflow(series: Series) -> None:
    hit = False
    for column in COUNTERS:
        a = series.values.get(column)
        if a is None or len(a) == 0:
            continue
        before = np.concatenate([[0.0], np.maximum.accumulate(a)[:-1]])
        bad = (a == 0) & (before > 0)
        if bad.any():
            a = a.copy()
            a[bad] = np.nan
            series.values[column] = a
            hit = True
    if hit:
        series.flags.append("counter_overflow")


def estimate_window(time: np.ndarray, running: np.ndarray | None, waiting: np.ndarray | None,
                    duration_s: float) -> tuple[float, float] | None:
    """(start, end) of the benchmark on the time.npy clock, from the end of activity and the duration.

    End = midpoint between the last sample with running + waiting > 0 and the next sample (or that last
    sample if the series ends busy); start = end - duration. None when there is no activity at all.
    Validated on the 130 runs that have a JSON with activity: the JSON end_time always lies between
    those two samples.
    """
    if running is None or len(time) == 0:
        return None
    busy = np.nan_to_num(running) + (np.nan_to_num(waiting) if waiting is not None else 0.0) > 0
    idx = np.flatnonzero(busy)
    if len(idx) == 0:
        return None
    last = idx[-1]
    end = (time[last] + time[last + 1]) / 2 if last + 1 < len(time) else float(time[last])
    return float(end - duration_s), float(end)


def to_frame(run_id: str, series: Series, time_base: str, window: tuple[float, float] | None) -> pl.DataFrame:
    """The timeseries rows of one run (columns of schema.TIMESERIES)."""
    n = len(series.time)
    data: dict[str, object] = {
        "run_id": pl.repeat(run_id, n, eager=True, dtype=pl.Utf8),
        "sample": np.arange(n, dtype=np.int64),
        "time_raw": series.time,
        "time_base": pl.repeat(time_base, n, eager=True, dtype=pl.Utf8),
        "t_poll_s": series.time - series.time[0] if n else series.time,
    }
    if window is not None:
        data["t_s"] = series.time - window[0]
        data["in_window"] = (series.time >= window[0]) & (series.time <= window[1])
    for column, a in series.values.items():
        data[column] = pl.Series(column, a, nan_to_null=True)
    frame = pl.DataFrame(data)
    ints = [c for c in (*GAUGES_INT, *COUNTERS) if c in frame.columns]
    return frame.with_columns([pl.col(c).cast(pl.Int64) for c in ints])


def window_stats(series: Series, window: tuple[float, float] | None) -> dict[str, float | int | None]:
    """Per-run aggregates for ``runs``: samples, samples in window, mean running in window, max running."""
    running = series.values.get("num_running")
    stats: dict[str, float | int | None] = {"n_samples": len(series.time), "n_samples_in_window": None,
                                            "mean_running_in_window": None, "max_running": None}
    if running is not None and len(running):
        stats["max_running"] = int(np.nanmax(running)) if not np.all(np.isnan(running)) else None
    if window is not None:
        inside = (series.time >= window[0]) & (series.time <= window[1])
        stats["n_samples_in_window"] = int(inside.sum())
        if running is not None and inside.any():
            stats["mean_running_in_window"] = float(np.nanmean(running[inside]))
    return stats
