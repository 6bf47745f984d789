"""The GPU groups placement actually builds, as twin scenarios: the surrogate's exam on real questions.

The surrogate stage takes this exam as a function (`exam`) from its caller: placement comes after the
surrogates in the pipeline, so the surrogate package does not import it.

Every method of the placement stage places every workload of the grid (params.yaml ``placement.grid``) with
the surrogate under test; each GPU of each placement becomes the scenario the verification would simulate
(`adaptwin.placement.verify.gpu_scenario`: routed rates, S_max, A_max, content seed). Re-simulated by the
twin they show how far the surrogate is from its teacher exactly where placement relies on it. Beside the
placements' final GPUs (nearly all unstarved), the exam holds candidates the surrogate turned down along the
way (`adaptwin.placement.questions`): they decide how many GPUs a placement needs.

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
    return placement_questions(context, grid, shared_dir, methods, duration_s, limit, 0, seed)[0]


def placement_questions(context: Any, grid: dict[str, Any], shared_dir: str | Path, methods: Sequence[str],
                        duration_s: float, finals: int | None = None, turned_down: int = 0, seed: int = 0,
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Twin scenarios of what ``methods`` ask on every workload of ``grid`` (at ``duration_s``): the distinct
    final GPUs of the placements (at most ``finals``, None = all) and at most ``turned_down`` distinct
    candidates the surrogate turned down on the way (`adaptwin.placement.questions`), each a seeded subset
    ordered by scenario id first. A candidate that is also a final GPU counts as final."""
    from adaptwin.placement.api import place
    from adaptwin.placement.questions import question_scenario, recording, rejected
    from adaptwin.placement.verify import gpu_scenario
    from adaptwin.placement.workloads import expand_grid, generate

    asked, recorder = recording(context) if turned_down > 0 else (context, None)
    scenarios = []
    for spec in expand_grid(grid):
        workload = generate(spec, shared_dir)
        for method in methods:
            placement = place(workload, asked, method)
            scenarios += [gpu_scenario(placement, gpu, duration_s) for gpu in placement.gpus]
    final = _subset(unique(scenarios), finals, seed)
    if recorder is None:
        return final, []
    final_ids = {scenario_id(s) for s in scenarios}
    declined = [question_scenario(context.model, q, duration_s) for q in rejected(recorder.questions)]
    declined = [s for s in unique(declined) if scenario_id(s) not in final_ids]
    return final, _subset(declined, turned_down, seed + 1)


def _subset(scenarios: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    """``scenarios`` sorted by id, or a seeded subset of ``limit`` of them."""
    found = sorted(scenarios, key=scenario_id)
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


def placement_set(surrogate: Any, data_dir: Path, config: Any, shared_dir: str | Path) -> tuple[Any, ...] | None:
    """The exam of `exam` as evaluation sets: ``placement_groups`` (every GPU group examined), and its two
    parts ``placement_final`` (the placements' GPUs) and ``placement_rejected`` (candidates turned down) when
    ``placement_rejected_groups`` > 0. With ``exam_draws`` > 1 their truth is the mean of that many twin runs
    per GPU (`adaptwin.surrogate.draws`), and ``placement_groups_one_draw`` scores the swept run alone."""
    from adaptwin.surrogate.draws import exam_sets
    from adaptwin.surrogate.evaluate import twin_set

    turned_down = config.placement_rejected_groups
    found = group_rows(surrogate, data_dir, config, shared_dir, config.groups_grid(), config.placement_groups,
                       config.seed, "placement_groups", workers=1, turned_down=turned_down)
    if found is None:
        return None
    swept, declined = found
    rows, sets = exam_sets(swept, "placement_groups", Layout.at(data_dir).models(surrogate.model) /
                           "placement_groups_draws", surrogate.calibration, config.exam_draws, config.threads)
    if turned_down > 0:
        is_declined = pl.col("scenario_id").is_in(sorted(declined))
        sets += [twin_set(rows.filter(~is_declined), "placement_final"),
                 twin_set(rows.filter(is_declined), "placement_rejected")]
    return tuple(sets)


def training_groups(surrogate: Any, data_dir: Path, config: Any, shared_dir: str | Path) -> pl.DataFrame | None:
    """The twin rows of the GPU groups of `coach` (swept into ``<models>/<model>/placement_train``, resumable):
    final GPUs and ``placement_train_rejected_groups`` candidates turned down; None when
    ``placement_train_groups`` is 0."""
    found = group_rows(surrogate, data_dir, config, shared_dir, config.train_grid(), config.placement_train_groups,
                       config.seed + 1, "placement_train", workers=config.threads,
                       turned_down=config.placement_train_rejected_groups)
    return None if found is None else found[0]


def group_rows(surrogate: Any, data_dir: Path, config: Any, shared_dir: str | Path, grid: dict[str, Any],
               limit: int, seed: int, name: str, workers: int, turned_down: int = 0,
               ) -> tuple[pl.DataFrame, set[str]] | None:
    """The twin rows (at the dataset's window) of at most ``limit`` GPUs that the methods
    ``placement_group_methods`` build with ``surrogate`` on ``grid`` and of at most ``turned_down`` candidates
    they turned down (`placement_questions`), swept into ``<models>/<model>/<name>`` (resumable) on ``workers``
    processes, and the scenario ids of the turned-down ones; None when ``limit`` is 0."""
    from adaptwin.surrogate.stage import dataset_window
    from adaptwin.sweep import load_dataset, run_sweep

    if limit <= 0:
        return None
    duration = dataset_window(data_dir, surrogate.model)
    final, declined = placement_questions(placement_context(surrogate, data_dir), grid, shared_dir,
                                          list(config.placement_group_methods), duration, limit, turned_down, seed)
    scenarios = final + declined
    out = Layout.at(data_dir).models(surrogate.model) / name
    if workers > 1 and len(scenarios) > 4 * workers:
        run_sweep(scenarios, out, calibration=surrogate.calibration, engine="dask", n_workers=workers,
                  chunk_size=50, batch_size=2, progress=False)
    else:
        run_sweep(scenarios, out, calibration=surrogate.calibration, engine="serial",
                  chunk_size=max(len(scenarios), 1), progress=False)
    return load_dataset(out), {scenario_id(s) for s in declined}
