"""Evaluate many scenarios with the twin, in parallel, into a resumable Parquet dataset.

Why this shape: a paper-scale dataset is tens of thousands of twin runs (hours on 2 cores), so a sweep must
survive being stopped at any point. Results go to ``<out_dir>/chunk-NNNNNN.parquet``, one file per chunk of
finished scenarios, each written atomically (`adaptwin.io.write_parquet`); a row is keyed by its
``scenario_id`` (hash of the scenario). A restart reads the ids already on disk and evaluates only the others,
so an interruption loses at most the unflushed chunk and never duplicates a row. A row also depends on the
twin that computed it: ``fingerprint.json`` holds `twin_fingerprint` (calibration content + twin source), and a
sweep started with another fingerprint moves the old chunks to ``stale/<fingerprint>/`` (kept, never loaded)
and starts afresh, so a recalibrated twin never trains surrogates on rows of the old one. ``design.json`` lists the
ids of the latest call, so rows left by a design with other knobs are kept (a cache) but not loaded. A scenario the twin rejects
(or that crashes it) becomes a row with ``error`` set and null outputs: it fails alone, the sweep goes on, and a
restart does not retry it (the twin is deterministic; use ``retry_errors=True`` after fixing the twin).

Engines: ``serial`` (default path, in this process) or ``dask`` (`adaptwin.runner`: a `distributed.LocalCluster`
of single-threaded worker processes, or an existing scheduler at ``scheduler_address`` to scale out). Both produce identical rows
for the same scenarios except the measured ``wall_time_s``/``sweep_wall_time_s``; `load_dataset` returns rows
sorted by ``scenario_id`` so the dataset does not depend on completion order.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from adaptwin import runner
from adaptwin.io import write_json, write_parquet
from adaptwin.twin.scenario import canonical_json, scenario_id, unique

SimulateFn = Callable[..., dict[str, Any]]
log = logging.getLogger(__name__)

#: twin outputs kept in the dataset (the `adaptwin.twin.simulate` result keys) with their dtypes
OUTPUT_SCHEMA: dict[str, pl.DataType] = {
    "total_throughput": pl.Float64, "input_throughput": pl.Float64, "output_throughput": pl.Float64,
    "request_throughput": pl.Float64, "arrived_requests": pl.Int64, "finished_requests": pl.Int64,
    "ttft_mean_ms": pl.Float64, "ttft_median_ms": pl.Float64, "ttft_p99_ms": pl.Float64,
    "itl_mean_ms": pl.Float64, "itl_median_ms": pl.Float64, "itl_p99_ms": pl.Float64,
    "mean_batch_size": pl.Float64, "preemptions": pl.Int64, "adapter_loads": pl.Int64,
    "ideal_throughput": pl.Float64, "offered_throughput": pl.Float64, "starved": pl.Boolean,
    "memory_error": pl.Boolean, "wall_time_s": pl.Float64,
}
#: outputs a twin may leave out (left null): a mean of draws judges starvation on them when present
OPTIONAL_OUTPUTS: tuple[str, ...] = ("offered_throughput",)
#: scenario columns flattened for analysis and features (groups stay lists: one entry per adapter group)
SCENARIO_SCHEMA: dict[str, pl.DataType] = {
    "scenario_id": pl.String, "model": pl.String, "served_adapters": pl.Int64, "max_loras": pl.Int64,
    "max_cpu_loras": pl.Int64, "max_lora_rank": pl.Int64, "max_num_seqs": pl.Int64, "arrivals": pl.String,
    "lengths": pl.String, "duration_s": pl.Float64, "seed": pl.Int64, "group_counts": pl.List(pl.Int64),
    "group_ranks": pl.List(pl.Int64), "group_rates": pl.List(pl.Float64), "scenario_json": pl.String,
}
ROW_SCHEMA: dict[str, pl.DataType] = {
    **SCENARIO_SCHEMA, **OUTPUT_SCHEMA, "error": pl.String, "sweep_wall_time_s": pl.Float64,
}
#: columns that measure time and so differ between two runs of the same scenario
TIMING_COLUMNS: tuple[str, ...] = ("wall_time_s", "sweep_wall_time_s")
_CHUNK = re.compile(r"chunk-(\d{6})\.parquet$")
#: the scenario ids of the latest sweep into a directory (what `load_dataset` returns)
DESIGN_FILE = "design.json"
FINGERPRINT_FILE = "fingerprint.json"
STALE_DIR = "stale"


@dataclass
class SweepReport:
    """What one call of `run_sweep` did."""

    out_dir: Path
    requested: int
    skipped: int  # already on disk (resume)
    evaluated: int = 0
    errors: int = 0
    chunks_written: int = 0
    wall_time_s: float = 0.0
    error_messages: dict[str, str] = field(default_factory=dict)

    @property
    def scenarios_per_s(self) -> float:
        """Evaluated scenarios per wall-clock second of this call (the paper's Table 3 throughput)."""
        return self.evaluated / self.wall_time_s if self.wall_time_s > 0 else float("nan")


# ---- one scenario ------------------------------------------------------------------------------------------
def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def scenario_columns(scenario: Any) -> dict[str, Any]:
    """The flattened scenario columns of a row; tolerant of malformed input (missing fields become null)."""
    groups = _get(scenario, "adapters")
    groups = groups if isinstance(groups, list) and all(isinstance(g, dict) for g in groups) else []

    def num(value: Any, kind: type) -> Any:
        try:
            return kind(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    counts = [num(g.get("count"), int) for g in groups]
    return {
        "scenario_id": scenario_id(scenario),
        "model": num(_get(scenario, "model"), str),
        "served_adapters": sum(c for c in counts if c is not None) if groups else None,
        "max_loras": num(_get(scenario, "server", "max_loras"), int),
        "max_cpu_loras": num(_get(scenario, "server", "max_cpu_loras"), int),
        "max_lora_rank": num(_get(scenario, "server", "max_lora_rank"), int),
        "max_num_seqs": num(_get(scenario, "server", "max_num_seqs"), int),
        "arrivals": num(_get(scenario, "arrivals", "kind"), str),
        "lengths": num(_get(scenario, "lengths", "kind"), str),
        "duration_s": num(_get(scenario, "duration_s"), float),
        "seed": num(_get(scenario, "seed"), int),
        "group_counts": counts,
        "group_ranks": [num(g.get("rank"), int) for g in groups],
        "group_rates": [num(g.get("rate"), float) for g in groups],
        "scenario_json": canonical_json(scenario),
    }


def evaluate_scenario(scenario: dict[str, Any], simulate: SimulateFn, calibration: Any = None) -> dict[str, Any]:
    """One dataset row: the scenario's columns and the twin's outputs, or ``error`` when the twin refuses it."""
    row = scenario_columns(scenario)
    row.update(dict.fromkeys(OUTPUT_SCHEMA))
    start = time.perf_counter()
    try:
        result = simulate(scenario, calibration) if calibration is not None else simulate(scenario)
        missing = [k for k in OUTPUT_SCHEMA if k not in result and k not in OPTIONAL_OUTPUTS]
        if missing:
            raise KeyError(f"twin result lacks {missing}")
        row.update({k: result.get(k) for k in OUTPUT_SCHEMA})
        row["error"] = None
    except Exception as exc:  # noqa: BLE001 - a malformed scenario must fail alone, with its error recorded
        last = traceback.extract_tb(exc.__traceback__)[-1:] or [None]
        where = f" ({last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last[0] else ""
        row["error"] = f"{type(exc).__name__}: {exc}{where}"
    row["sweep_wall_time_s"] = time.perf_counter() - start
    return row


def evaluate_batch(scenarios: Sequence[dict[str, Any]], simulate: SimulateFn | None = None,
                   calibration: Any = None) -> list[dict[str, Any]]:
    """Rows of several scenarios (the unit of work sent to a Dask worker, to amortise task overhead)."""
    simulate = simulate or _default_simulate()
    return [evaluate_scenario(s, simulate, calibration) for s in scenarios]


def _default_simulate() -> SimulateFn:
    from adaptwin.twin import simulate

    return simulate


def rows_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """Rows as a DataFrame with the fixed `ROW_SCHEMA` (so chunks concatenate), sorted by scenario id."""
    frame = pl.DataFrame(list(rows), schema=ROW_SCHEMA, strict=False)
    return frame.sort("scenario_id")


# ---- the dataset directory ---------------------------------------------------------------------------------
def chunk_files(out_dir: str | Path) -> list[Path]:
    """The chunk files of a sweep directory, in write order."""
    out_dir = Path(out_dir)
    return sorted(p for p in out_dir.glob("chunk-*.parquet") if _CHUNK.search(p.name)) if out_dir.exists() else []


def done_ids(out_dir: str | Path) -> set[str]:
    """Scenario ids already in the dataset directory."""
    files = chunk_files(out_dir)
    if not files:
        return set()
    return set(pl.scan_parquet(files).select("scenario_id").collect()["scenario_id"].to_list())


def load_dataset(out_dir: str | Path, *, include_errors: bool = False, design_only: bool = True) -> pl.DataFrame:
    """The rows of a sweep directory, sorted by ``scenario_id``; errored rows only on request.

    With ``design_only`` (default), only the scenarios of the latest `run_sweep` call (``design.json``): rows
    of an earlier design (other knobs) stay on disk as a cache, reused if those knobs come back, but are not
    mixed into the dataset."""
    files = chunk_files(out_dir)
    if not files:
        raise FileNotFoundError(f"{out_dir}: no chunk-*.parquet files (run the dataset stage first)")
    # diagonal: chunks cached before an optional output existed lack its column (null there)
    frame = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed").sort("scenario_id")
    design = Path(out_dir) / DESIGN_FILE
    if design_only and design.exists():
        frame = frame.filter(pl.col("scenario_id").is_in(json.loads(design.read_text())["scenario_ids"]))
    return frame if include_errors else frame.filter(pl.col("error").is_null())


class _ChunkWriter:
    """Buffers rows and writes them as numbered chunk files, atomically."""

    def __init__(self, out_dir: Path, chunk_size: int) -> None:
        self.out_dir, self.chunk_size, self.buffer = out_dir, chunk_size, []
        existing = chunk_files(out_dir)
        self.next_index = int(_CHUNK.search(existing[-1].name).group(1)) + 1 if existing else 0
        self.written = 0

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        self.buffer.extend(rows)
        while len(self.buffer) >= self.chunk_size:
            self._write(self.buffer[: self.chunk_size])
            self.buffer = self.buffer[self.chunk_size:]

    def flush(self) -> None:
        if self.buffer:
            self._write(self.buffer)
            self.buffer = []

    def _write(self, rows: list[dict[str, Any]]) -> None:
        write_parquet(self.out_dir / f"chunk-{self.next_index:06d}.parquet", rows_frame(rows))
        self.next_index += 1
        self.written += 1


# ---- which twin computed the rows ---------------------------------------------------------------------------
def twin_fingerprint(calibration: Any = None) -> str:
    """Hash of what a row depends on besides its scenario: the calibration's content (``raw`` of a
    `adaptwin.calibration.costs.Calibration`) and the source of `adaptwin.twin`. Any change re-sweeps."""
    import adaptwin.twin

    h = hashlib.sha256()
    raw = getattr(calibration, "raw", None)
    h.update(canonical_json(raw).encode() if raw else b"<calibration from data/calibration per model>")
    for path in sorted(Path(adaptwin.twin.__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def retire_stale_rows(out_dir: Path, fingerprint: str) -> int:
    """Move the chunks of another twin to ``stale/<their fingerprint>/`` and record ``fingerprint``; returns
    how many chunk files moved. Directories without a fingerprint file but with chunks are stale too."""
    path = out_dir / FINGERPRINT_FILE
    old = json.loads(path.read_text())["fingerprint"] if path.exists() else "unknown"
    moved = 0
    if old != fingerprint:
        files = chunk_files(out_dir)
        if files:
            dest = out_dir / STALE_DIR / old[:16]
            dest.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.move(str(f), dest / f.name)
            moved = len(files)
            log.warning("%s: %d chunk(s) computed by another twin (fingerprint %s) moved to %s",
                        out_dir, moved, old[:16], dest)
        write_json(path, {"fingerprint": fingerprint})
    return moved


# ---- the sweep ---------------------------------------------------------------------------------------------
def pending_scenarios(scenarios: Iterable[dict[str, Any]], out_dir: str | Path,
                      retry_errors: bool = False) -> tuple[list[dict[str, Any]], int]:
    """The scenarios not yet in ``out_dir`` (deduplicated) and how many were skipped."""
    todo = unique(list(scenarios))
    done = done_ids(out_dir)
    if retry_errors and done:
        errored = load_dataset(out_dir, include_errors=True).filter(pl.col("error").is_not_null())
        done -= set(errored["scenario_id"].to_list())
    pending = [s for s in todo if scenario_id(s) not in done]
    return pending, len(todo) - len(pending)


def run_sweep(scenarios: Iterable[dict[str, Any]], out_dir: str | Path, *, simulate: SimulateFn | None = None,
              calibration: Any = None, engine: str = "serial", chunk_size: int = 100, batch_size: int = 4,
              n_workers: int = 2, scheduler_address: str | None = None, progress: bool = True,
              retry_errors: bool = False, fingerprint: str | None = None) -> SweepReport:
    """Evaluate every scenario not already in ``out_dir`` and append the rows in chunks (see module doc).

    ``simulate(scenario, calibration)`` defaults to `adaptwin.twin.simulate`; ``engine`` is ``serial`` or
    ``dask`` (``scheduler_address`` None starts a `LocalCluster` of ``n_workers`` single-threaded processes).
    ``fingerprint`` (default: `twin_fingerprint` of ``calibration`` when ``simulate`` is the twin's; a custom
    ``simulate`` gets no check unless one is given) retires rows computed by another twin.
    """
    if engine not in ("serial", "dask"):
        raise ValueError(f"dataset.engine: expected 'serial' or 'dask', got {engine!r}")
    if chunk_size < 1 or batch_size < 1:
        raise ValueError(f"dataset.chunk_size / batch_size: expected >= 1, got {chunk_size!r} / {batch_size!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fingerprint is None and simulate is None:
        fingerprint = twin_fingerprint(calibration)
    if fingerprint is not None:
        retire_stale_rows(out_dir, fingerprint)
    scenarios = unique(list(scenarios))
    write_json(out_dir / DESIGN_FILE, {"scenario_ids": sorted(scenario_id(s) for s in scenarios)})
    pending, skipped = pending_scenarios(scenarios, out_dir, retry_errors)
    report = SweepReport(out_dir=out_dir, requested=len(pending) + skipped, skipped=skipped)
    if retry_errors:
        _drop_rows(out_dir, {scenario_id(s) for s in pending})
    writer = _ChunkWriter(out_dir, chunk_size)
    batches = [pending[i:i + batch_size] for i in range(0, len(pending), batch_size)]
    start = time.perf_counter()
    from tqdm.auto import tqdm

    with tqdm(total=len(pending), disable=not progress, desc=f"sweep {out_dir.name}", unit="scn") as bar:
        work = functools.partial(evaluate_batch, simulate=simulate, calibration=calibration)
        results = (rows for _, rows in runner.map_unordered(
            work, batches, workers=1 if engine == "serial" else n_workers,
            scheduler_address=scheduler_address if engine == "dask" else None))
        try:
            for rows in results:
                writer.add(rows)
                report.evaluated += len(rows)
                for r in rows:
                    if r["error"] is not None:
                        report.errors += 1
                        report.error_messages[r["scenario_id"]] = r["error"]
                bar.update(len(rows))
        finally:
            writer.flush()  # an interruption keeps every finished row
            report.chunks_written = writer.written
            report.wall_time_s = time.perf_counter() - start
    return report


def _drop_rows(out_dir: Path, ids: set[str]) -> None:
    """Rewrite the chunks without the rows in ``ids`` (used only to retry errored scenarios)."""
    for path in chunk_files(out_dir):
        frame = pl.read_parquet(path)
        kept = frame.filter(~pl.col("scenario_id").is_in(list(ids)))
        if kept.height < frame.height:
            if kept.height:
                write_parquet(path, kept)
            else:
                path.unlink()
