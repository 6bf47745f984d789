"""Workloads to place: a table ``adapter_id, rank, rate`` (rate in requests/s), read from CSV or generated.

Generated workloads (the paper's evaluation grid):
- ``azure``: a window of an Azure LLM trace (``../shared/traces``) replicated ``k`` times (the copies overlaid,
  so the aggregate rate is k times the window's), requests mapped to adapters with a Zipf popularity (exponent ``popularity``) after
  giving every adapter one request (so each adapter has a rate), per-adapter rate = its requests / window.
  ``k`` is the arrival multiplier (x1, x10 in the paper's Fig. 11) times the smallest replication giving
  ``requests_per_adapter`` requests per adapter on average (at least one each), so the load grows with the
  number of adapters as in the paper's experiments.
- synthetic: ``poisson`` (request counts per adapter drawn from a Poisson law around ``mean_rate`` over a
  ``window_s`` observation, at least one request), ``uniform`` (rates uniform in [lo, hi]) and ``powerlaw``
  (Pareto rates with exponent ``alpha`` scaled to ``mean_rate``).
Ranks are drawn uniformly from a rank mix (``8-16`` or ``8-16-32``). Every draw comes from a seeded generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adaptwin.placement.core import PlacementError

COLUMNS = ("adapter_id", "rank", "rate")
RANK_MIXES: dict[str, tuple[int, ...]] = {"8": (8,), "8-16": (8, 16), "8-16-32": (8, 16, 32)}
TRACES = {"conv": "azure_llm_2023_conv.csv", "code": "azure_llm_2023_code.csv"}


# ---- reading and validation ---------------------------------------------------------------------------
def read_workload(path: str | Path, max_rank: int | None = None) -> pl.DataFrame:
    """Read and validate a workload CSV; every problem raises `PlacementError` naming the file, row and field.

    Rows are numbered as in the file (header = line 1, first data row = line 2)."""
    path = Path(path)
    try:
        raw = pl.read_csv(path, infer_schema_length=0)  # all strings: we check the numbers ourselves
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise PlacementError(f"{path}: cannot read workload CSV ({exc})") from exc
    return validate_workload(raw, max_rank=max_rank, source=str(path))


def validate_workload(frame: pl.DataFrame, max_rank: int | None = None, source: str = "workload") -> pl.DataFrame:
    """Check columns, ids, ranks and rates; return ``adapter_id`` (str), ``rank`` (int), ``rate`` (float)."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise PlacementError(f"{source}: missing column(s) {', '.join(missing)} (need {','.join(COLUMNS)})")
    if frame.height == 0:
        raise PlacementError(f"{source}: no adapters")
    ids, ranks, rates, seen = [], [], [], {}
    for i, row in enumerate(frame.select(COLUMNS).iter_rows()):
        line = i + 2
        adapter_id, rank, rate = (None if v is None else str(v).strip() for v in row)
        if not adapter_id:
            raise PlacementError(f"{source}: row {line}: empty adapter_id")
        if adapter_id in seen:
            raise PlacementError(f"{source}: row {line}: duplicate adapter_id {adapter_id!r} (first at row {seen[adapter_id]})")
        seen[adapter_id] = line
        ids.append(adapter_id)
        ranks.append(_rank(rank, line, source, max_rank))
        rates.append(_rate(rate, line, source))
    return pl.DataFrame({"adapter_id": ids, "rank": ranks, "rate": rates},
                        schema={"adapter_id": pl.Utf8, "rank": pl.Int64, "rate": pl.Float64})


def _rank(value: str | None, line: int, source: str, max_rank: int | None) -> int:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PlacementError(f"{source}: row {line}: field rank: not a number: {value!r}") from None
    if not number.is_integer() or number <= 0:
        raise PlacementError(f"{source}: row {line}: field rank: must be a positive integer, got {value!r}")
    if max_rank is not None and number > max_rank:
        raise PlacementError(f"{source}: row {line}: field rank: {value} above the model's largest rank {max_rank}")
    return int(number)


def _rate(value: str | None, line: int, source: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PlacementError(f"{source}: row {line}: field rate: not a number: {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise PlacementError(f"{source}: row {line}: field rate: must be finite and >= 0, got {value!r}")
    return number


# ---- generation ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkloadSpec:
    """One generated workload; ``name`` identifies it in tables and figures."""

    kind: str  # azure | poisson | uniform | powerlaw
    adapters: int
    rank_mix: str = "8-16"
    multiplier: float = 1.0
    seed: int = 0
    trace: str = "conv"
    window_s: float = 600.0
    mean_rate: float = 0.05
    alpha: float = 1.2  # Pareto exponent of `powerlaw` rates
    popularity: float = 0.8  # Zipf exponent of adapter popularity in `azure` workloads
    requests_per_adapter: float = 30.0  # `azure`: replicate the window until it has this many per adapter

    @property
    def name(self) -> str:
        return f"{self.kind}-n{self.adapters}-r{self.rank_mix}-x{self.multiplier:g}"


def spec_from_dict(d: dict[str, Any]) -> WorkloadSpec:
    """A `WorkloadSpec` from a params.yaml entry, naming any unknown key."""
    known = set(WorkloadSpec.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise PlacementError(f"workload {d}: unknown key(s) {unknown}; known: {sorted(known)}")
    return WorkloadSpec(**d)


def expand_grid(grid: dict[str, Any]) -> list[WorkloadSpec]:
    """Every combination of ``kinds x adapters x rank_mixes x multipliers`` (params.yaml ``placement.grid``)."""
    common = {k: v for k, v in grid.items() if k not in ("kinds", "adapters", "rank_mixes", "multipliers")}
    return [
        spec_from_dict({"kind": kind, "adapters": n, "rank_mix": mix, "multiplier": m, **common})
        for kind in grid["kinds"] for mix in grid["rank_mixes"] for m in grid["multipliers"] for n in grid["adapters"]
    ]


def generate(spec: WorkloadSpec, shared_dir: str | Path | None = None) -> pl.DataFrame:
    """The workload table for ``spec`` (deterministic in ``spec``)."""
    if spec.adapters <= 0:
        raise PlacementError(f"workload {spec.name}: adapters must be positive, got {spec.adapters}")
    if spec.rank_mix not in RANK_MIXES:
        raise PlacementError(f"workload {spec.name}: rank_mix {spec.rank_mix!r} not in {sorted(RANK_MIXES)}")
    rng = np.random.default_rng([spec.seed, spec.adapters, len(spec.rank_mix), int(spec.multiplier * 1000)])
    if spec.kind == "azure":
        if shared_dir is None:
            raise PlacementError(f"workload {spec.name}: azure workloads need the shared folder")
        rates = azure_rates(spec, Path(shared_dir), rng)
    elif spec.kind in SYNTHETIC:
        rates = SYNTHETIC[spec.kind](spec, rng) * spec.multiplier
    else:
        raise PlacementError(f"workload {spec.name}: unknown kind {spec.kind!r}")
    ranks = rng.choice(np.array(RANK_MIXES[spec.rank_mix]), size=spec.adapters)
    return pl.DataFrame({
        "adapter_id": [f"a{i:05d}" for i in range(spec.adapters)],
        "rank": ranks.astype(np.int64),
        "rate": np.round(rates, 6),
    })


def _poisson(spec: WorkloadSpec, rng: np.random.Generator) -> np.ndarray:
    counts = np.maximum(1, rng.poisson(spec.mean_rate * spec.window_s, size=spec.adapters))
    return counts / spec.window_s


def _uniform(spec: WorkloadSpec, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.2 * spec.mean_rate, 1.8 * spec.mean_rate, size=spec.adapters)


def _powerlaw(spec: WorkloadSpec, rng: np.random.Generator) -> np.ndarray:
    raw = rng.pareto(spec.alpha, size=spec.adapters) + 1.0
    return raw / raw.mean() * spec.mean_rate


SYNTHETIC = {"poisson": _poisson, "uniform": _uniform, "powerlaw": _powerlaw}


def trace_window(shared_dir: Path, trace: str, window_s: float) -> int:
    """Requests in the first ``window_s`` seconds of an Azure trace."""
    if trace not in TRACES:
        raise PlacementError(f"trace {trace!r} not in {sorted(TRACES)}")
    path = shared_dir / "traces" / TRACES[trace]
    if not path.exists():
        raise PlacementError(f"{path}: trace not found (paths.shared in params.yaml)")
    arrived = pl.read_csv(path, columns=["arrived_at"])["arrived_at"]
    return int((arrived < window_s).sum())


def azure_rates(spec: WorkloadSpec, shared_dir: Path, rng: np.random.Generator) -> np.ndarray:
    """Per-adapter rates from an Azure trace window replicated k times (see the module docstring)."""
    per_window = trace_window(shared_dir, spec.trace, spec.window_s)
    if per_window == 0:
        raise PlacementError(f"workload {spec.name}: no request in the first {spec.window_s} s of {spec.trace}")
    base_k = max(1, math.ceil(spec.adapters * max(1.0, spec.requests_per_adapter) / per_window))
    k = max(1, round(base_k * spec.multiplier))
    total = per_window * k
    counts = np.ones(spec.adapters, dtype=np.int64)  # every adapter gets one request
    ranks = np.arange(1, spec.adapters + 1, dtype=float)
    popularity = ranks ** (-spec.popularity)
    popularity = rng.permutation(popularity / popularity.sum())
    counts += rng.multinomial(total - spec.adapters, popularity) if total > spec.adapters else 0
    return counts / spec.window_s
