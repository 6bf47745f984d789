"""``ingest(source_dir, out_dir)``: every family of the data card -> tidy Parquet tables.

A run is a leaf folder below a family root (adaptwin.measurements.families) that holds any run file
(``log_*``, ``server_*.log``, ``*.npy``, ``openai-*.json``). Bad input never stops the ingest: each problem
becomes a ``runs`` row with a status and reason (or a flag) and an :class:`IngestWarning` naming the file.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from adaptwin.io import write_parquet
from adaptwin.measurements import families, schema
from adaptwin.measurements.runs import RunResult, read_run

_RUN_FILES = (".npy", ".out", ".err", ".log", ".json")


class IngestWarning(UserWarning):
    """A problem with one input file; the ingest went on without (part of) it."""


@dataclass
class IngestReport:
    """What an ingest read and wrote: runs per family and status, rows per table, warnings (each naming a
    file), wall time."""

    source_dir: Path
    out_dir: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0

    def counts_frame(self) -> pl.DataFrame:
        """family x status counts as a long table."""
        rows = [{"family": f, "status": s, "runs": n} for f, c in self.counts.items() for s, n in c.items()]
        return pl.DataFrame(rows, schema={"family": pl.Utf8, "status": pl.Utf8, "runs": pl.Int64})

    def format(self) -> str:
        """A plain-text summary for the command line."""
        statuses = list(schema.STATUSES)
        head = f"{'family':<26}" + "".join(f"{s:>13}" for s in statuses) + f"{'total':>8}"
        lines = [head]
        for fam, c in self.counts.items():
            lines.append(f"{fam:<26}" + "".join(f"{c.get(s, 0):>13}" for s in statuses) + f"{sum(c.values()):>8}")
        lines.append("")
        lines.extend(f"{t}: {n} rows" for t, n in self.rows.items())
        lines.append(f"warnings: {len(self.warnings)}; wall time {self.wall_time_s:.1f} s; tables in {self.out_dir}")
        return "\n".join(lines)


def ingest(source_dir: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = False) -> IngestReport:
    """Read every family under ``source_dir`` (the vllm-measurements folder) and write the tables of
    adaptwin.measurements.schema as ``<out_dir>/<table>.parquet`` (atomically). ``progress`` shows a bar of
    run folders on stderr (the command line: the ingest takes seconds)."""
    start = time.perf_counter()
    root, out = Path(source_dir), Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"source_dir {root}: not a directory (expected the vllm-measurements folder)")
    report = IngestReport(root, out)
    folders = _run_folders(root, report)
    if progress:
        from tqdm import tqdm

        folders = tqdm(folders, desc="ingest", unit=" runs", file=sys.stderr, delay=1.0, leave=False)
    results = [_read_one(root, folder, report) for folder in folders]
    tables = {
        "runs": _runs_table([r for r in results if r is not None]),
        "timeseries": _timeseries_table([r for r in results if r is not None]),
        "kv_capacity": _kv_table([r for r in results if r is not None]),
        "adapter_loading": _loading_table([r for r in results if r is not None]),
        "scheduler_overhead": _scheduler_table(root, report),
        "lora_load_times": _lora_load_times_table(root, report),
        "constants": _constants_table(root, report),
    }
    for name, frame in tables.items():
        write_parquet(out / f"{name}.parquet", frame)
        report.rows[name] = frame.height
    report.counts = _counts(tables["runs"])
    report.wall_time_s = time.perf_counter() - start
    return report


def read_table(directory: str | os.PathLike, table: str) -> pl.DataFrame:
    """Read ``<directory>/<table>.parquet`` written by :func:`ingest`, checked against the schema.

    Raises FileNotFoundError naming the file when it is missing (run ``adaptwin ingest`` first) and
    ValueError naming the table when its columns differ from adaptwin.measurements.schema.
    """
    if table not in schema.TABLES:
        raise ValueError(f"unknown measurement table {table!r}; known: {sorted(schema.TABLES)}")
    path = Path(directory) / f"{table}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run `adaptwin ingest --out {directory}` first")
    frame = pl.read_parquet(path)
    if frame.schema != pl.Schema(schema.polars_schema(table)):
        raise ValueError(f"{path}: columns differ from adaptwin.measurements.schema.{table.upper()}; re-run ingest")
    return frame


def _warn(report: IngestReport, message: str) -> None:
    report.warnings.append(message)
    warnings.warn(message, IngestWarning, stacklevel=3)


def _run_folders(root: Path, report: IngestReport) -> list[Path]:
    """Leaf folders with run files, in sorted order; leaves outside every family are reported."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if dirnames or not any(f.endswith(_RUN_FILES) and not f.endswith("README.md") for f in filenames):
            continue
        folder = Path(dirpath)
        rel = folder.relative_to(root).as_posix()
        if families.locate(rel) is None:
            if any(f.startswith("log_") or f.endswith(".npy") for f in filenames):
                _warn(report, f"{folder}: run files outside every known family folder; skipped")
            continue
        found.append(folder)
    return found


def _read_one(root: Path, folder: Path, report: IngestReport) -> RunResult | None:
    location = families.locate(folder.relative_to(root).as_posix())
    try:
        result = read_run(root, folder, location)
    except Exception as exc:  # noqa: BLE001 -- one bad run must never stop the ingest
        _warn(report, f"{folder}: could not be read ({type(exc).__name__}: {exc}); kept as a no_summary row")
        row = {"run_id": folder.relative_to(root).as_posix(), "family": location.family.name,
               "subfamily": location.subfamily, "model": location.model, "status": "no_summary",
               "reason": f"ingest error: {type(exc).__name__}: {exc}", "flags": []}
        return RunResult(row, None, None, {})
    for message in result.problems:
        _warn(report, message)
    return result


def _counts(runs: pl.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {fam.name: {} for fam in families.FAMILIES}
    for fam, status, n in runs.group_by(["family", "status"]).len().sort(["family", "status"]).iter_rows():
        counts.setdefault(fam, {})[status] = n
    return counts


# --- tables -------------------------------------------------------------------------------------------------


def _runs_table(results: list[RunResult]) -> pl.DataFrame:
    if not results:
        return schema.empty("runs")
    schema_ = schema.polars_schema("runs")
    rows = [{k: v for k, v in r.row.items() if k in schema_} for r in results]
    frame = pl.DataFrame(rows, schema=schema_)
    return schema.conform("runs", frame).sort("run_id")


def _timeseries_table(results: list[RunResult]) -> pl.DataFrame:
    frames = [r.timeseries for r in results if r.timeseries is not None and r.timeseries.height]
    if not frames:
        return schema.empty("timeseries")
    frame = pl.concat([schema.conform("timeseries", f) for f in frames], how="vertical")
    return frame.sort(["run_id", "sample"])


def kv_capacity_row(row: dict[str, Any], server_out: Any, error_texts: Iterable[str]) -> dict[str, Any]:
    """One ``kv_capacity`` row from a ``runs`` row, the parsed server startup lines (`parse.ServerOut`, or None
    when there is no server log) and the logs to search for vLLM's max-seq-len shortfall, in order. Shared by
    the replay ingest and the profiling writers, so both mean the same by every column."""
    from adaptwin.measurements.parse import kv_shortfall

    so = server_out
    shortfall = next((s for t in error_texts if (s := kv_shortfall(t))), None)
    return {
        "run_id": row["run_id"], "model": row.get("model"), "max_loras": row.get("max_loras"),
        "max_lora_rank": row.get("max_lora_rank"),
        "kv_tokens": so.kv_tokens if so else None,
        "model_memory_gib": so.model_memory_gib if so else None,
        "model_loading_s": so.model_loading_s if so else None,
        "kv_needed_gib": shortfall[0] if shortfall else None,
        "kv_available_gib": shortfall[1] if shortfall else None,
        "status": row["status"], "reason": row.get("reason"),
    }


def _kv_table(results: list[RunResult]) -> pl.DataFrame:
    rows = [kv_capacity_row(r.row, r.server_out, r.error_texts.values())
            for r in results if r.row["family"] == "available_gpu_memory"]
    if not rows:
        return schema.empty("kv_capacity")
    frame = pl.DataFrame(rows, schema=schema.polars_schema("kv_capacity"))
    return frame.sort(["model", "max_lora_rank", "max_loras"])


def _loading_table(results: list[RunResult]) -> pl.DataFrame:
    frames = []
    for r in results:
        if r.row["family"] == "adapter_loading" and r.server_out is not None and r.server_out.loads:
            frames.append(loading_rows(r.row, r.server_out.loads))
    if not frames:
        return schema.empty("adapter_loading")
    return pl.concat(frames).sort(["run_id", "source", "load_index"])


def loading_rows(row: dict, loads: list[tuple[str, int, float]]) -> pl.DataFrame:
    """Per-load rows of one adapter-loading run from its cumulative server_out.log lines.

    Each cumulative line is differenced against the previous line of the same source. Memory loads up to
    the number of disk loads are the start-up activations; the rest are one per request. The authors'
    value is (cumulative memory time at the last line - at line n_disk) / (request loads), in ms.
    """
    subfamily = row.get("subfamily") or ""
    adapter_rank = int(subfamily.rsplit("_", 1)[-1]) if subfamily.startswith("adapter_rank_") else None
    n_disk = max((n for s, n, _ in loads if s == "disk"), default=0)
    out = []
    for source in ("disk", "memory"):
        previous = 0.0
        for _, n, cumulative in sorted(x for x in loads if x[0] == source):
            out.append({"source": source, "load_index": n, "cumulative_time_s": cumulative,
                        "load_time_ms": (cumulative - previous) * 1000.0,
                        "phase": "startup" if source == "disk" or n <= n_disk else "request"})
            previous = cumulative
    memory = {n: t for s, n, t in loads if s == "memory"}
    last = max(memory, default=0)
    authors = (memory[last] - memory[n_disk]) / (last - n_disk) * 1000.0 if n_disk in memory and last > n_disk else None
    frame = pl.DataFrame(out).with_columns(
        pl.lit(row["run_id"]).alias("run_id"), pl.lit(row.get("model")).alias("model"),
        pl.lit(adapter_rank).alias("adapter_rank"), pl.lit(row.get("max_lora_rank")).alias("max_lora_rank"),
        pl.lit(authors).alias("authors_mean_ms"),
    )
    return schema.conform("adapter_loading", frame)


def _read_csv(root: Path, rel: str, report: IngestReport) -> pl.DataFrame | None:
    path = root / rel
    if not path.exists():
        _warn(report, f"{path}: missing; table left empty")
        return None
    try:
        return pl.read_csv(path)
    except Exception as exc:  # noqa: BLE001 -- polars raises several error types for bad CSV
        _warn(report, f"{path}: unreadable CSV ({type(exc).__name__}: {exc}); table left empty")
        return None


def _scheduler_table(root: Path, report: IngestReport) -> pl.DataFrame:
    frames = []
    for source, rel in families.SCHEDULER_CSVS.items():
        frame = _read_csv(root, rel, report)
        if frame is not None:
            frame = frame.with_columns(
                pl.lit(source).alias("source"),
                (pl.col("total_scheduling_time") / pl.col("steps")).alias("scheduling_time_per_step_s"),
            )
            frames.append(schema.conform("scheduler_overhead", frame))
    return pl.concat(frames) if frames else schema.empty("scheduler_overhead")


def _lora_load_times_table(root: Path, report: IngestReport) -> pl.DataFrame:
    frame = _read_csv(root, families.LORA_LOAD_TIMES_CSV, report)
    return schema.conform("lora_load_times", frame) if frame is not None else schema.empty("lora_load_times")


def _constants_table(root: Path, report: IngestReport) -> pl.DataFrame:
    rows = []
    for estimator, rel_dir, suffix in families.CONSTANTS_FILES:
        for model in families.MODELS:
            path = root / rel_dir / f"{model}{suffix}"
            if not path.exists():
                continue
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                _warn(report, f"{path}: unreadable constants JSON ({exc})")
                continue
            rows.extend(_constant_rows(path.relative_to(root).as_posix(), model, estimator, data))
    if not rows:
        return schema.empty("constants")
    return pl.DataFrame(rows, schema=schema.polars_schema("constants")).sort(["file", "key"])


def _constant_rows(file: str, model: str, estimator: str, data: dict) -> list[dict]:
    if estimator == "loading":
        return [{"file": file, "model": model, "estimator": estimator, "key": f"{s}/{r}", "max_lora_rank": int(s),
                 "adapter_rank": int(r), "value": float(v)} for s, inner in data.items() for r, v in inner.items()]
    return [{"file": file, "model": model, "estimator": estimator, "key": k, "value": float(v)}
            for k, v in data.items()]
