"""The GPU groups placement actually builds, as twin scenarios: the surrogate's exam on real questions.

The surrogate stage takes this exam as a function (`exam`) from its caller: placement comes after the
surrogates in the pipeline, so the surrogate package does not import it.

Every method of the placement stage places every workload of the grid (params.yaml ``placement.grid``) with
the surrogate under test; each GPU of each placement becomes the scenario the verification would simulate
(`adaptwin.placement.verify.gpu_scenario`: routed rates, S_max, A_max, content seed). Re-simulated by the
twin they show how far the surrogate is from its teacher exactly where placement relies on it. Only the
placements' final GPUs are taken (the candidates a method rejected along the way are not recorded).

The same machinery also teaches (`coach`): the GPUs the methods build with a first surrogate on a *training*
grid of other workloads (other seed, sizes, multipliers, trace) are re-simulated and added to the training
rows, so the surrogate learns the twin on the kind of GPU placement asks about; the exam grid stays unseen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adaptwin.layout import Layout
from adaptwin.twin.scenario import scenario_id, unique


def placement_group_scenarios(context: Any, grid: dict[str, Any], shared_dir: str | Path,
                              methods: Sequence[str], duration_s: float, limit: int | None = None,
                              seed: int = 0) -> list[dict[str, Any]]:
    """The distinct GPU scenarios of ``methods`` on every workload of ``grid`` (at ``duration_s``); with
    ``limit``, a seeded subset of that many (ordered by scenario id first, so the subset does not depend on
    the order methods ran in)."""
    from adaptwin.placement.api import place
    from adaptwin.placement.verify import gpu_scenario
    from adaptwin.placement.workloads import expand_grid, generate

    scenarios = []
    for spec in expand_grid(grid):
        workload = generate(spec, shared_dir)
        for method in methods:
            placement = place(workload, context, method)
            scenarios += [gpu_scenario(placement, gpu, duration_s) for gpu in placement.gpus]
    found = sorted(unique(scenarios), key=scenario_id)
    if limit is None or limit >= len(found):
        return found
    keep = np.random.default_rng(seed).choice(len(found), size=limit, replace=False)
    return [found[i] for i in sorted(keep)]


def exam(config: Any, shared_dir: str | Path) -> Callable[[Any, Path], Any]:
    """The surrogate stage's placement check: for a trained surrogate, the GPU groups the methods
    ``placement_group_methods`` of the `adaptwin.surrogate.stage.SurrogateConfig` ``config`` build with it on
    its ``groups_grid()`` (at most ``placement_groups`` of them), re-simulated by the twin at the dataset's
    window (serially), as an evaluation set."""
    def check(surrogate: Any, data_dir: Path) -> Any:
        return placement_set(surrogate, data_dir, config, shared_dir)

    return check


def coach(config: Any, shared_dir: str | Path) -> Callable[[Any, Path], pl.DataFrame | None]:
    """The surrogate stage's placement-driven training rows: for a first surrogate, the GPU groups the methods
    ``placement_group_methods`` build with it on the config's ``train_grid()`` (at most
    ``placement_train_groups``), re-simulated by the twin at the dataset's window (on ``threads`` processes)."""
    def rows(surrogate: Any, data_dir: Path) -> pl.DataFrame | None:
        return training_groups(surrogate, data_dir, config, shared_dir)

    return rows


def placement_context(surrogate: Any, data_dir: Path) -> Any:
    """The placement context the pipeline's placement stage would build around ``surrogate`` (automatic
    margin and headroom, the best unstarved throughput of the dataset)."""
    from adaptwin.placement.api import make_context
    from adaptwin.sweep import load_dataset

    dataset = load_dataset(Layout.at(data_dir).dataset(surrogate.model))
    best = float(dataset.filter(~pl.col("starved") & ~pl.col("memory_error"))["total_throughput"].max())
    return make_context(surrogate.model, predictor=surrogate, calibration=surrogate.calibration, margin="auto",
                        load_headroom="auto", best_throughput=best)


def placement_set(surrogate: Any, data_dir: Path, config: Any, shared_dir: str | Path) -> Any:
    """The GPU groups the placement methods build with ``surrogate`` (see `exam`)."""
    from adaptwin.surrogate.evaluate import twin_set

    rows = group_rows(surrogate, data_dir, config, shared_dir, config.groups_grid(), config.placement_groups,
                      config.seed, "placement_groups", workers=1)
    return None if rows is None else twin_set(rows, "placement_groups")


def training_groups(surrogate: Any, data_dir: Path, config: Any, shared_dir: str | Path) -> pl.DataFrame | None:
    """The twin rows of the GPU groups of `coach` (swept into ``<models>/<model>/placement_train``, resumable);
    None when ``placement_train_groups`` is 0."""
    return group_rows(surrogate, data_dir, config, shared_dir, config.train_grid(), config.placement_train_groups,
                      config.seed + 1, "placement_train", workers=config.threads)


def group_rows(surrogate: Any, data_dir: Path, config: Any, shared_dir: str | Path, grid: dict[str, Any],
               limit: int, seed: int, name: str, workers: int) -> pl.DataFrame | None:
    """The twin rows (at the dataset's window) of at most ``limit`` GPUs that the methods
    ``placement_group_methods`` build with ``surrogate`` on ``grid``, swept into ``<models>/<model>/<name>``
    (resumable) on ``workers`` processes; None when ``limit`` is 0."""
    from adaptwin.surrogate.stage import dataset_window
    from adaptwin.sweep import load_dataset, run_sweep

    if limit <= 0:
        return None
    duration = dataset_window(data_dir, surrogate.model)
    scenarios = placement_group_scenarios(placement_context(surrogate, data_dir), grid, shared_dir,
                                          list(config.placement_group_methods), duration, limit, seed)
    out = Layout.at(data_dir).models(surrogate.model) / name
    if workers > 1 and len(scenarios) > 4 * workers:
        run_sweep(scenarios, out, calibration=surrogate.calibration, engine="dask", n_workers=workers,
                  chunk_size=50, batch_size=2, progress=False)
    else:
        run_sweep(scenarios, out, calibration=surrogate.calibration, engine="serial",
                  chunk_size=max(len(scenarios), 1), progress=False)
    return load_dataset(out)
