"""`place()`: one entry point for every method, and `make_context()`, which gathers what they share (surrogate,
calibration, uncertainty margin, tokens per request, best per-GPU throughput for the lower bound).

Defaults live here once: ``adaptwin place`` and ``adaptwin.placement.place`` call `make_context` with the same
defaults (the repository's ``data/metrics/surrogates.json`` for the margin, ``data/dataset/<model>`` for the
best per-GPU throughput, `TWIN_DURATION_S` for twin checks), so the library and the command give one answer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adaptwin.layout import Layout
from adaptwin.paths import shown
from adaptwin.placement import bounds, greedy, methods
from adaptwin.placement.core import (
    Evaluator,
    Gpu,
    Placement,
    PlacementError,
    PlacementNotes,
    Predictor,
)
from adaptwin.placement.methods import METHODS as METHODS  # the names, re-exported for callers of `place`
from adaptwin.placement.methods import PROPOSED
from adaptwin.twin.scenario import A_MAX_CHOICES

#: margin used when the surrogates' real-run error is unknown (no data/metrics/surrogates.json)
DEFAULT_MARGIN = 0.05
#: largest margin taken from the metrics: throughput never exceeds the ideal, so a bar at (0.9 + margin) x ideal
#: above ~0.98 x ideal would call every GPU unsafe (a poorly trained surrogate must not empty the placement)
MAX_MARGIN = 0.08
#: simulated seconds per GPU in the twin checks of a verified placement (the stage's placement.repair_duration_s)
TWIN_DURATION_S = 1200.0
#: the least throughput a share of a split adapter is credited with, as a fraction of the best per-GPU
#: throughput, in `adapter_bound` (generous: the bound must only catch splits no load justifies)
SHARE_FLOOR = 0.5
#: a path argument left at this value means "the repository's usual file" (`repository_default`)
REPOSITORY = "<repository>"


def repository_default(value: str | Path | None, default: Path) -> Path | None:
    """``value`` as given, or the repository's ``default`` path (from `adaptwin.layout`) when ``value`` is
    `REPOSITORY`."""
    if value == REPOSITORY:
        return default
    return None if value is None else Path(value)


@dataclass
class Context:
    """Everything a placement needs besides the workload."""

    model: str
    evaluator: Evaluator
    best_throughput: float
    best_throughput_source: str
    margin_source: str
    extensions: bool = True  # the greedy's steps beyond the paper (False = Algorithm 1 as published)
    twin_bound_s: float = 0.0  # > 0: a bound of 1 is checked by the twin over this many simulated seconds
    _bounds: dict[int, int] = field(default_factory=dict, repr=False)

    def load_bound(self, workload: pl.DataFrame) -> int:
        """The issue's formula: offered load / best per-GPU throughput, rounded up."""
        return bounds.lower_bound_gpus(float(workload["rate"].sum()), self.evaluator.tokens_per_request,
                                       self.best_throughput)

    def lower_bound(self, workload: pl.DataFrame) -> int:
        """`load_bound`, raised to 2 when it is 1 and the twin serves the workload on one GPU at no A_max
        (`bounds.one_gpu_serves`; only with ``twin_bound_s`` > 0). Memoised per workload content."""
        bound = self.load_bound(workload)
        if bound > 1 or self.twin_bound_s <= 0:
            return bound
        key = hash((tuple(workload["rank"].to_list()), tuple(workload["rate"].to_list())))
        if key not in self._bounds:
            ev = self.evaluator
            options = ev.a_max_options(workload.height, int(workload["rank"].max()))
            serves = bounds.one_gpu_serves(self.model, workload, ev.calibration, options, self.twin_bound_s)
            self._bounds[key] = 1 if serves else 2
        return self._bounds[key]


def margin_from_metrics(path: str | Path, model: str) -> float | None:
    """The surrogate's throughput SMAPE on real runs (as a fraction) from surrogates.json, if recorded: under
    the model's name (``<model>.real_runs.throughput_smape_pct``, as the surrogate stage writes it), else at
    the top (``real_runs.throughput_smape_pct``, a single-model file). Read here rather than through the claims
    report's lookup, which belongs to a later stage."""
    path = Path(path)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    for scope in (data.get(model), data):
        runs = scope.get("real_runs") if isinstance(scope, dict) else None
        value = runs.get("throughput_smape_pct") if isinstance(runs, dict) else None
        if isinstance(value, (int, float)) and value == value:
            return float(value) / 100.0
    return None


def _given_or_auto(value: float | str | None, field: str) -> float | None:
    """A non-negative number as given, None for ``"auto"``/None; anything else is refused naming ``field``."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise PlacementError(f"placement.{field}: must be >= 0, got {value}")
        return float(value)
    if value not in (None, "auto"):
        raise PlacementError(f"placement.{field}: expected a number or 'auto', got {value!r}")
    return None


def resolve_headroom(headroom: float | str | None, metrics_path: str | Path | None, model: str) -> float:
    """Load headroom of the safety rule: a number as given; ``"auto"``/None = the surrogates' real-run
    throughput error (unclamped: a load margin never rejects every GPU), else `DEFAULT_MARGIN`."""
    given = _given_or_auto(headroom, "load_headroom")
    if given is not None:
        return given
    found = margin_from_metrics(metrics_path, model) if metrics_path else None
    return DEFAULT_MARGIN if found is None else found


def resolve_margin(margin: float | str | None, metrics_path: str | Path | None, model: str) -> tuple[float, str]:
    """(margin, where it came from): a number is used as given; ``"auto"``/None reads the surrogates' real-run
    throughput error (at most `MAX_MARGIN`), else `DEFAULT_MARGIN`."""
    given = _given_or_auto(margin, "margin")
    if given is not None:
        return given, "params"
    found = margin_from_metrics(metrics_path, model) if metrics_path else None
    if found is not None:
        clamped = "" if found <= MAX_MARGIN else f", {found:.3f} clamped to {MAX_MARGIN}"
        return min(found, MAX_MARGIN), f"real-run throughput SMAPE in {shown(metrics_path)}{clamped}"
    return DEFAULT_MARGIN, "default (no surrogate real-run error recorded)"


def make_context(model: str, *, predictor: Predictor | None = None, calibration: Any = None,
                 models_dir: str | Path | None = None, calibration_path: str | Path | None = None,
                 metrics_path: str | Path | None = REPOSITORY, dataset_dir: str | Path | None = REPOSITORY,
                 margin: float | str | None = "auto", starvation_threshold: float = 0.5,
                 max_served: int = 576, candidates: tuple[int, ...] = A_MAX_CHOICES,
                 tokens_per_request: float | None = None, best_throughput: float | None = None,
                 twin_duration_s: float = 120.0, extensions: bool = True,
                 load_headroom: float | str | None = "auto", twin_bound_s: float = 0.0) -> Context:
    """Load the surrogate and calibration (unless given) and derive the shared constants. ``twin_bound_s`` > 0
    lets the twin raise a lower bound of 1 (`Context.lower_bound`). ``metrics_path`` and ``dataset_dir`` default
    to the repository's ``data/metrics/surrogates.json`` and ``data/dataset/<model>`` (None: do not use)."""
    metrics_path = repository_default(metrics_path, Layout.default().metrics("surrogates"))
    dataset_dir = repository_default(dataset_dir, Layout.default().dataset(model))
    if predictor is None:
        from adaptwin.surrogate import load

        predictor = load(model, models_dir=models_dir)
    if calibration is None:
        from adaptwin.calibration.costs import load_calibration

        calibration = load_calibration(calibration_path or Layout.default().calibration(model))
    value, margin_source = resolve_margin(margin, metrics_path, model)
    headroom = resolve_headroom(load_headroom, metrics_path, model)
    tpr = tokens_per_request or bounds.tokens_per_request(model, predictor)
    if best_throughput is None:
        best, source = bounds.best_gpu_throughput(model, calibration, dataset_dir, twin_duration_s)
    else:
        best, source = float(best_throughput), "given"
    ev = Evaluator(predictor=predictor, calibration=calibration, tokens_per_request=tpr, margin=value,
                   starvation_threshold=starvation_threshold, candidates=tuple(candidates), max_served=max_served,
                   load_headroom=headroom)
    return Context(model, ev, best, source, margin_source, extensions, twin_bound_s)


def shares_needed(adapters: pl.DataFrame, context: Context) -> np.ndarray:
    """Per adapter, the GPUs its own load can justify: 1, or more when the adapter offers more than
    `SHARE_FLOOR` x the best per-GPU throughput (an adapter busier than a GPU is split, and a share runs below
    capacity to stay safe)."""
    tokens = adapters["rate"].to_numpy().astype(float) * context.evaluator.tokens_per_request
    per_share = SHARE_FLOOR * context.best_throughput
    return np.maximum(1, np.ceil(tokens / per_share - 1e-9)).astype(np.int64)


def adapter_bound(adapters: pl.DataFrame, context: Context) -> int:
    """GPUs no placement needs to exceed: one per adapter, or as many shares as an adapter's own load takes
    when each share gets `SHARE_FLOOR` x the best per-GPU throughput (an adapter busier than a GPU is split,
    and a share runs below capacity to stay safe). A placement above it splits adapters the load does not
    require (a poorly trained surrogate can split every adapter 64 ways)."""
    return int(shares_needed(adapters, context).sum())


def max_rank(calibration: Any) -> int:
    """The model's largest adapter rank: the largest S_max the calibration's loading table covers."""
    return max(calibration.loading_ms)


def place(adapters: pl.DataFrame, model: str | Context, method: str = PROPOSED, *,
          keep_whole: frozenset[int] = frozenset(), **context_kwargs: Any) -> Placement:
    """Place ``adapters`` (``adapter_id, rank, rate``) with ``method``: the surrogate's proposal, before any
    twin check (`adaptwin.placement.pipeline` runs the rest). The time includes every surrogate call.

    ``model`` is a model name (the surrogate and calibration are loaded by `make_context` with
    ``context_kwargs``) or a ready `Context` (reuse it when placing many workloads). ``keep_whole``: rows the
    greedy must not split (`greedy.split_heavy`)."""
    spec = methods.method(method)
    context = model if isinstance(model, Context) else make_context(model, **context_kwargs)
    ev = context.evaluator
    lower = context.lower_bound(adapters)
    load_bound = context.load_bound(adapters)
    t0 = time.perf_counter()
    if spec.proposal and context.extensions:
        gpus, notes = _split_pack_collapse(adapters, context, spec, lower, keep_whole)
    else:
        gpus, overloaded = spec.placer(adapters, ev, lower, context.extensions)
        notes = PlacementNotes(overloaded_gpus=overloaded if spec.proposal else None)
    elapsed = time.perf_counter() - t0
    bound = adapter_bound(adapters, context)
    if len(gpus) > bound:
        notes = replace(notes, sanity_bound=(
            f"{method} uses {len(gpus)} GPUs, more than one per adapter plus the shares their load needs "
            f"({bound}): the surrogate rates even light GPUs unsafe; retrain it or use the twin-verified placement"))
    notes = replace(notes, load_bound_gpus=load_bound,
                    predicted_unsafe_gpus=sum(not g.safe for g in gpus))
    return Placement(context.model, method, adapters, gpus, lower, elapsed, notes)


def _split_pack_collapse(adapters: pl.DataFrame, context: Context, spec: methods.Method, lower: int,
                         keep_whole: frozenset[int]) -> tuple[list[Gpu], PlacementNotes]:
    """A proposal with the greedy's extensions: adapters too busy for one GPU become equal shares
    (`greedy.split_heavy`, capped by `_cap_shares`), the shares are packed, and the shares of an adapter that
    land on one GPU merge back (`greedy.collapse`)."""
    ev = context.evaluator
    rows, origin, share = greedy.split_heavy(adapters, ev, keep_whole=keep_whole)
    capped, sanity = _cap_shares(adapters, context, spec.name, origin)
    if capped is not None:
        rows, origin, share = capped
    gpus, overloaded = spec.placer(rows, ev, lower, True)
    split = len(set(origin[share < 1.0].tolist()))
    notes = PlacementNotes(overloaded_gpus=overloaded, split_adapters=split, sanity_bound=sanity)
    return greedy.collapse(gpus, origin, share), notes


def _cap_shares(adapters: pl.DataFrame, context: Context, method: str, origin: np.ndarray,
                ) -> tuple[tuple[pl.DataFrame, np.ndarray, np.ndarray] | None, str | None]:
    """The split of `greedy.split_heavy` with each adapter's shares capped at what its own load needs
    (`shares_needed`) and the note saying so, or (None, None) when no adapter exceeds it. Checked before
    packing: a surrogate that misjudges light adapters splits every one of them 64 ways (60,000 shares take
    minutes to pack into 6,000 GPUs); capped, a busy adapter is still split, and the placement stays within
    `adapter_bound`."""
    counts = np.bincount(origin, minlength=adapters.height)
    needed = shares_needed(adapters, context)
    excess = counts > needed
    if not excess.any():
        return None, None
    capped = np.where(excess, needed, counts)
    note = (f"{method} split {int(excess.sum())} adapters into {int(counts[excess].sum())} shares, more than their "
            f"own load needs; capped at {int(capped[excess].sum())} shares (at most {int(capped.sum())} GPUs for "
            f"{adapters.height} adapters)")
    return greedy.expand(adapters, capped), note
