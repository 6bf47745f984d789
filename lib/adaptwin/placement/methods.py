"""The placement methods, each described once: its name, how it packs a workload, and what the steps around
the packing do with it (`adaptwin.placement.pipeline`).

Why one registry: the command's ``--method`` choices, the stage's method list, the twin repair, the shrink's
A_max preference, the single-GPU experiment and the baselines a proposal is compared with all depend on what a
method is. Reading that from one record keeps them in step when a method is added or changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from adaptwin.placement import baselines, greedy, latency
from adaptwin.placement.core import Evaluator, Gpu, PlacementError

#: packs ``rows`` (the workload, or its shares) given the evaluator, the lower bound and whether the greedy's
#: extensions are on; returns the GPUs and the indices of GPUs holding an adapter too busy for any GPU
Placer = Callable[[pl.DataFrame, Evaluator, int, bool], tuple[list[Gpu], list[int]]]
#: the A_max a method picks when all of ``ranks, rates`` go on one GPU of S_max ``s_max`` (Fig. 10)
OneGpuChoice = Callable[[np.ndarray, np.ndarray, int, Evaluator], int]


@dataclass(frozen=True)
class Method:
    """A placement method and what the placement sequence does with it.

    ``proposal``: one of the proposed greedy variants: heavy adapters are split into shares before packing and
    merged back after, and the stage's headline compares it with the baselines. ``twin_repairs``: the stage
    sends its placements through the twin repair and shrink. ``latency``: it prefers the lowest-ITL safe A_max,
    also when the shrink re-deals it. ``one_gpu``: its A_max in the single-GPU experiment (None: not shown
    there, as it picks what another method picks). ``fallback_order``: for a baseline, its rank when several
    stand in for a proposal on the same GPU count (lower first: the simpler method); ``quick``: it places
    1,000 adapters in well under a second, so the unverified answer compares with it."""

    name: str
    placer: Placer
    proposal: bool = False
    twin_repairs: bool = False
    latency: bool = False
    one_gpu: OneGpuChoice | None = None
    fallback_order: int = 0
    quick: bool = False


def _greedy(rows: pl.DataFrame, ev: Evaluator, lower: int, extensions: bool) -> tuple[list[Gpu], list[int]]:
    return greedy.place_greedy(rows, ev, fast=False, extensions=extensions)


def _greedy_fast(rows: pl.DataFrame, ev: Evaluator, lower: int, extensions: bool) -> tuple[list[Gpu], list[int]]:
    return greedy.place_greedy(rows, ev, fast=True, extensions=extensions)


def _greedy_latency(rows: pl.DataFrame, ev: Evaluator, lower: int,
                    extensions: bool) -> tuple[list[Gpu], list[int]]:
    """The greedy's GPU count, then its adapters spread for the lowest ITL (`latency.place_latency`)."""
    gpus, overloaded = greedy.place_greedy(rows, ev, fast=False, extensions=extensions)
    return latency.place_latency(rows, ev, gpus), overloaded


def _loraserve(rows: pl.DataFrame, ev: Evaluator, lower: int, extensions: bool) -> tuple[list[Gpu], list[int]]:
    return baselines.place_loraserve(rows, ev), []


def _dlora(rows: pl.DataFrame, ev: Evaluator, lower: int, extensions: bool) -> tuple[list[Gpu], list[int]]:
    return baselines.place_dlora(rows, ev, lower), []


def _ffd(rows: pl.DataFrame, ev: Evaluator, lower: int, extensions: bool) -> tuple[list[Gpu], list[int]]:
    return baselines.place_ffd(rows, ev), []


def _round_robin(rows: pl.DataFrame, ev: Evaluator, lower: int, extensions: bool) -> tuple[list[Gpu], list[int]]:
    return baselines.place_round_robin(rows, ev, lower), []


def walked_a_max(ranks: np.ndarray, rates: np.ndarray, s_max: int, ev: Evaluator) -> int:
    """The A_max Algorithm 1's walk reaches (`greedy.walk_a_max`)."""
    return greedy.walk_a_max(ranks, rates, ev)


def operating_point_a_max(ranks: np.ndarray, rates: np.ndarray, s_max: int, ev: Evaluator) -> int:
    """LoRAServe's operating point for the largest rank, capped by what the served count and memory allow."""
    options = ev.a_max_options(len(ranks), s_max)
    _, point = baselines.operating_point(s_max, float(rates.mean()), ev)
    return max([a for a in options if a <= point], default=options[0])


def largest_a_max(ranks: np.ndarray, rates: np.ndarray, s_max: int, ev: Evaluator) -> int:
    """The largest A_max memory allows for the served count."""
    return ev.a_max_options(len(ranks), s_max)[-1]


REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("greedy", _greedy, proposal=True, twin_repairs=True, one_gpu=walked_a_max),
    Method("greedy-fast", _greedy_fast, proposal=True, twin_repairs=True),
    Method("greedy-latency", _greedy_latency, proposal=True, twin_repairs=True, latency=True),
    Method("loraserve", _loraserve, one_gpu=operating_point_a_max, fallback_order=3, quick=True),
    Method("dlora", _dlora, one_gpu=largest_a_max, fallback_order=1, quick=True),
    Method("ffd", _ffd, one_gpu=largest_a_max, fallback_order=2),  # one surrogate call per adapter
    Method("round-robin", _round_robin, one_gpu=largest_a_max, fallback_order=0, quick=True),
)}

#: every method's name, in the order the stage runs them and the command lists them
METHODS: tuple[str, ...] = tuple(REGISTRY)
#: the proposed method: the command's default and the one the stage's headline judges
PROPOSED = "greedy"
#: the methods a proposal is compared with, simplest first (`Method.fallback_order`)
BASELINES: tuple[str, ...] = tuple(m.name for m in sorted((m for m in REGISTRY.values() if not m.proposal),
                                                          key=lambda m: m.fallback_order))
#: the baselines an unverified answer is compared with (`Method.quick`)
FAST_BASELINES: tuple[str, ...] = tuple(name for name in BASELINES if REGISTRY[name].quick)
#: the methods whose stage placements go through the twin repair and shrink (`Method.twin_repairs`)
REPAIRED: tuple[str, ...] = tuple(m.name for m in REGISTRY.values() if m.twin_repairs)


def method(name: str) -> Method:
    """The registered method called ``name``; a `PlacementError` lists the known ones otherwise."""
    if name not in REGISTRY:
        raise PlacementError(f"method {name!r} not in {', '.join(METHODS)}")
    return REGISTRY[name]


def prefers_itl(name: str) -> bool:
    """Whether placements by ``name`` re-deal at the lowest-ITL safe A_max first (False for a name not
    registered: a placement built by hand keeps the throughput choice)."""
    spec = REGISTRY.get(name)
    return spec is not None and spec.latency
