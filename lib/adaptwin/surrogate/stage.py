"""The ``train_surrogates`` stage (notebook 05): train, save and evaluate, per model (the notebook plots).

Writes ``<data>/models/<model>/`` (cbm files, ``metadata.json`` with the metrics, ``table.csv`` = the Table
4/5-like comparison) and ``<data>/metrics/surrogates.json`` (one entry per model,
the headline keys the claims report reads: ``real_runs.throughput_smape_pct``,
``real_runs.starvation_macro_f1``, ``ms_per_prediction_single``, ``ms_per_prediction_batched``, ``heldout.*``,
``learners.<name>.*``), plus the distillation sets: ``fresh_heterogeneous`` (the dataset stage's fresh test
set: another seed, another popularity law), ``placement_groups`` (the GPUs the placement methods build with
this surrogate on the workload grid and candidates they turned down, re-simulated by the twin; its two parts
are ``placement_final`` and ``placement_rejected``), ``real_runs_heterogeneous`` (data card 5.9),
``beside_twin`` (surrogate and twin vs the same real runs) and ``breakdown`` (by A_max and by load).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from adaptwin.io import write_json
from adaptwin.layout import Layout
from adaptwin.params import config_from_section
from adaptwin.surrogate.draws import ONE_DRAW
from adaptwin.surrogate.evaluate import (
    EvalSet,
    beside_twin,
    breakdown,
    evaluate,
    json_safe,
    real_runs,
    real_set,
)
from adaptwin.surrogate.model import Surrogate
from adaptwin.surrogate.train import TRANSFORMS, TrainingError, TrainResult, save, train_surrogates
from adaptwin.sweep import load_dataset


@dataclass(frozen=True)
class SurrogateConfig:
    """The ``surrogates:`` section of params.yaml (see there for what each knob does)."""

    models: tuple[str, ...]
    n_search: int
    max_iterations: int
    test_fraction: float
    seed: int
    threads: int
    throughput_transform: str = field(metadata={"choices": TRANSFORMS})
    baselines: tuple[str, ...]
    real_runs_model: str
    cv_folds: int = 3
    timing_singles: int = 200
    physics_features: bool = True
    placement_groups: int = 0  # GPUs built by the placement methods and re-simulated by the twin (0 = skip)
    placement_group_methods: tuple[str, ...] = ()
    placement_groups_grid: dict[str, Any] | None = None  # None = the placement stage's own grid
    placement_rejected_groups: int = 0  # candidate GPUs the methods turned down, added to the exam (0 = none)
    placement_train_groups: int = 0  # GPUs the methods build with a first surrogate on placement_train_grid,
    placement_train_grid: dict[str, Any] | None = None  # re-simulated and trained on (0 = skip)
    placement_train_rejected_groups: int = 0  # plus candidates the methods turned down there (0 = none)
    active_rounds: int = 0  # rounds of uncertainty sampling (`adaptwin.surrogate.active`): pick, simulate, retrain
    active_scenarios: int = 0  # GPUs the twin labels per round
    active_pool: int = 20  # candidates scored per GPU kept
    active_window_s: float | None = None  # simulated window of those GPUs; None = the dataset's
    exam_draws: int = 1  # twin runs averaged per exam GPU (fresh set, placement groups); 1 = the swept run alone

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> SurrogateConfig:
        """The config of a params.yaml ``surrogates:`` section; an unknown key or a bad value raises a
        TrainingError naming it."""
        config = config_from_section(cls, section, "surrogates", TrainingError)
        if config.exam_draws < 1:
            raise TrainingError(f"surrogates.exam_draws: expected >= 1, got {config.exam_draws!r}")
        return config

    def groups_grid(self) -> dict[str, Any]:
        """The workload grid of the placement groups: ``placement_groups_grid``, else params.yaml's
        ``placement.grid`` (the groups are then the GPUs the placement stage itself would build)."""
        if self.placement_groups_grid is not None:
            return self.placement_groups_grid
        from adaptwin.params import load_params

        return load_params()["placement"]["grid"]

    def train_grid(self) -> dict[str, Any]:
        """The workload grid of the placement-driven training groups; it must differ from the exam's
        `groups_grid` (training on the exam's own workloads would make the exam in-sample)."""
        if self.placement_train_grid is None:
            raise TrainingError("surrogates.placement_train_grid: needed when placement_train_groups > 0")
        if self.placement_train_grid == self.groups_grid():
            raise TrainingError("surrogates.placement_train_grid: equals the exam's grid (placement_groups_grid or "
                                "placement.grid); give the training groups other workloads")
        return self.placement_train_grid


def train_model(model: str, data_dir: str | Path, config: SurrogateConfig, calibration: Any,
                extra: tuple[pl.DataFrame, ...] = (), searched: dict[str, Any] | None = None) -> TrainResult:
    """Train the four surrogates of ``model`` on ``<data>/dataset/<model>`` (plus ``extra`` twin rows;
    ``searched``: reuse that search's configurations)."""
    dataset = pl.concat([load_dataset(Layout.at(data_dir).dataset(model)), *extra], how="vertical_relaxed")
    return train_surrogates(dataset, model, calibration=calibration, n_search=config.n_search,
                            max_iterations=config.max_iterations, test_fraction=config.test_fraction,
                            seed=config.seed, threads=config.threads,
                            throughput_transform=config.throughput_transform, cv_folds=config.cv_folds,
                            physics=config.physics_features, searched=searched)


def load_real_runs(data_dir: str | Path, model: str, real_runs_model: str,
                   family: str = "real_results") -> pl.DataFrame | None:
    """The real runs of ``family`` to test ``model``'s surrogates on (only ``real_runs_model`` has them)."""
    path = Layout.at(data_dir).measurements("runs")
    if model != real_runs_model or not path.exists():
        return None
    return real_runs(pl.read_parquet(path), model, family)


def fresh_set(data_dir: str | Path, model: str, draws: int = 1, calibration: Any = None,
              workers: int = 1) -> tuple[EvalSet, ...]:
    """The dataset stage's fresh heterogeneous test set of ``model`` (empty if it was not swept); with
    ``draws`` > 1 its truth is the mean of that many twin runs per GPU (`adaptwin.surrogate.draws`, the extra
    runs swept into ``<models>/<model>/fresh_draws``) and the swept draw alone follows as
    ``fresh_heterogeneous_one_draw``."""
    from adaptwin.dataset.stage import fresh_dir
    from adaptwin.surrogate.draws import exam_sets

    directory = fresh_dir(data_dir, model)
    if not directory.exists() or not list(directory.glob("chunk-*.parquet")):
        return ()
    out_dir = Layout.at(data_dir).models(model) / "fresh_draws"
    return tuple(exam_sets(load_dataset(directory), "fresh_heterogeneous", out_dir, calibration, draws, workers)[1])


def load_validation(data_dir: str | Path) -> pl.DataFrame | None:
    """The twin validation's per-run rows (notebook 03), if present."""
    path = Layout.at(data_dir).validation("runs")
    return pl.read_parquet(path) if path.exists() else None


@dataclass
class ModelOutcome:
    """What the stage learned about one model: its surrogates.json entry and what the figures draw."""

    model: str
    metrics: dict[str, Any]
    result: TrainResult
    breakdown: pl.DataFrame
    real_runs: pl.DataFrame | None


#: the caller's exam of a trained surrogate on the GPU groups placement builds with it (placement comes after
#: the surrogates in the pipeline, so the stage takes it as a function instead of importing placement)
PlacementCheck = Callable[[Surrogate, Path], EvalSet | tuple[EvalSet, ...] | None]
#: the caller's training rows built with a first surrogate (the twin's rows of the GPUs placement builds with it
#: on other workloads than the exam's; a function for the same reason)
PlacementRows = Callable[[Surrogate, Path], pl.DataFrame | None]


def run_model(model: str, data_dir: str | Path, config: SurrogateConfig,
              placement_check: PlacementCheck | None = None,
              placement_rows: PlacementRows | None = None) -> ModelOutcome:
    """Train, evaluate and save one model; returns its entry of surrogates.json and what its figures need."""
    from adaptwin.calibration.costs import load_calibration

    data_dir = Path(data_dir)
    calibration = load_calibration(Layout.at(data_dir).calibration(model))
    result, active, coached = train_actively(model, data_dir, config, calibration, placement_rows)
    surrogate = result.surrogate
    runs = load_real_runs(data_dir, model, config.real_runs_model)
    hetero = load_real_runs(data_dir, model, config.real_runs_model, "heterogeneous_results")
    exam = placement_check(surrogate, data_dir) if placement_check else None
    extra = [*fresh_set(data_dir, model, config.exam_draws, calibration, config.threads),
             *(exam if isinstance(exam, tuple) else (exam,)),
             real_set(hetero, surrogate.tokens_per_request, "real_runs_heterogeneous") if hetero is not None
             and hetero.height else None]
    extra_sets = tuple(s for s in extra if s is not None)
    metrics, table = evaluate(result, runs, baselines=config.baselines, seed=config.seed,
                              singles=config.timing_singles, extra_sets=extra_sets)
    validation = load_validation(data_dir)
    metrics["beside_twin"] = {name: beside_twin(surrogate, frame, validation)
                              for name, frame in (("real_runs", runs), ("real_runs_heterogeneous", hetero))
                              if frame is not None}
    by = pl.concat([breakdown(surrogate.predict, s, calibration) for s in extra_sets
                    if s.name != "real_runs_heterogeneous" and not s.name.endswith(ONE_DRAW)]
                   or [pl.DataFrame()], how="diagonal")
    metrics["breakdown"] = by.to_dicts()
    metrics["active"] = active
    metrics["placement_training"] = coached
    metrics.update({"dataset_rows": result.data.frame.height, "train_rows": len(result.train_idx),
                    "test_rows": len(result.test_idx), "train_time_s": round(result.train_time_s, 3),
                    "feature_names": list(surrogate.feature_names),
                    "tokens_per_request": surrogate.tokens_per_request})
    metrics = json_safe(metrics)
    surrogate.metadata["metrics"] = {k: v for k, v in metrics.items() if k != "learners"}
    out_dir = Layout.at(data_dir).models(model)
    save(surrogate, out_dir)
    from adaptwin.io import atomic_write

    atomic_write(out_dir / "table.csv", lambda p: table.write_csv(p))
    return ModelOutcome(model, metrics, result, by, runs)


def dataset_window(data_dir: str | Path, model: str) -> float:
    """The simulated window of ``model``'s dataset design (``duration_s`` of the dataset stage's knobs; 600 s
    when the summary is missing)."""
    import json

    path = Layout.at(data_dir).dataset_summary()
    entry = json.loads(path.read_text()).get(model, {}) if path.exists() else {}
    return float(entry.get("knobs", {}).get("duration_s", 600.0))


def train_actively(model: str, data_dir: str | Path, config: SurrogateConfig, calibration: Any,
                   placement_rows: PlacementRows | None = None
                   ) -> tuple[TrainResult, list[dict[str, Any]], dict[str, Any]]:
    """Train on the dataset; then, with ``placement_rows``, add the twin rows of the GPUs placement builds with
    that first surrogate and train again (refitting the first search's configurations); then ``active_rounds``
    times: the twin labels the ``active_scenarios`` GPUs the current surrogate is least sure about
    (`adaptwin.surrogate.active`, at the dataset's window, swept into ``<models>/<model>/active/round-<r>``), and
    the surrogates are trained again on everything. Returns the last result, the active rounds' records and the
    placement rows' record."""
    import time

    from adaptwin.surrogate.active import active_round

    result = train_model(model, data_dir, config, calibration)
    extra: list[pl.DataFrame] = []
    coached: dict[str, Any] = {"rows": 0}
    if placement_rows is not None and config.placement_train_groups > 0:
        start = time.perf_counter()
        rows = placement_rows(result.surrogate, Path(data_dir))
        if rows is not None and rows.height:
            extra.append(rows)
            coached = {"rows": rows.height, "starved": int(rows["starved"].sum()),
                       "simulate_and_place_s": round(time.perf_counter() - start, 1)}
            result = train_model(model, data_dir, config, calibration, tuple(extra), searched=result.search)
    records = []
    for r in range(config.active_rounds if config.active_scenarios > 0 else 0):
        rows, record = active_round(result.surrogate, config.active_scenarios, config.active_pool,
                                    config.active_window_s or dataset_window(data_dir, model), seed=1000 * (config.seed + 1) + r,
                                    out_dir=Layout.at(data_dir).models(model) / "active" / f"round-{r}")
        extra.append(rows)
        result = train_model(model, data_dir, config, calibration, tuple(extra))
        records.append(record)
    return result, records, coached


def run_stage(config: SurrogateConfig, data_dir: str | Path,
              placement_check: PlacementCheck | None = None,
              draw: Callable[[ModelOutcome], None] | None = None,
              placement_rows: PlacementRows | None = None) -> dict:
    """Every model; writes ``<data>/metrics/surrogates.json`` and returns it. ``draw`` gets each model's
    outcome as soon as it is saved (the notebook passes `adaptwin.figures.surrogates.model_figures`);
    ``placement_rows`` (the notebook passes `adaptwin.placement.groups.coach`) adds placement-driven rows."""
    results = {}
    for model in config.models:
        outcome = run_model(model, data_dir, config, placement_check, placement_rows)
        if draw is not None:
            draw(outcome)
        results[model] = outcome.metrics
    write_json(Layout.at(data_dir).metrics("surrogates"), results)
    return results


def table(data_dir: str | Path, model: str) -> pl.DataFrame:
    """The saved Table 4/5-like comparison of ``model``."""
    return pl.read_csv(Layout.at(data_dir).models(model) / "table.csv")


#: evaluation sets of the distillation table, in display order
DISTILLATION_SETS: tuple[str, ...] = ("heldout", "fresh_heterogeneous", "fresh_heterogeneous_one_draw",
                                      "placement_groups", "placement_groups_one_draw", "placement_final",
                                      "placement_rejected", "real_runs", "real_runs_heterogeneous")


def distillation_table(metrics: dict[str, Any], models: list[str]) -> pl.DataFrame:
    """Throughput SMAPE and starvation macro-F1 of every learner on every evaluation set it was scored on."""
    rows = []
    for model in models:
        for learner, entry in metrics[model]["learners"].items():
            for name in DISTILLATION_SETS:
                if name in entry:
                    h = entry[name]
                    rows.append({"model": model, "learner": learner, "set": name, "n": h["n"],
                                 "throughput_smape_pct": h["throughput_smape_pct"],
                                 "starvation_macro_f1": h["starvation_macro_f1"]})
    return pl.DataFrame(rows)


def dataset_summary(data_dir: str | Path, models: list[str]) -> pl.DataFrame:
    """Per model: dataset rows, rows simulated by the last sweep, its wall time and scenarios per second, and
    the fresh test set's rows (from ``<data>/dataset/summary.json``; empty if the stage has not run)."""
    import json

    path = Layout.at(data_dir).dataset_summary()
    summary = json.loads(path.read_text()) if path.exists() else {}
    return pl.DataFrame([
        {"model": m, "rows": e.get("rows"), "usable_rows": e.get("usable_rows"), "simulated_now": e.get("evaluated_now"),
         "wall_time_s": e.get("wall_time_s"), "scenarios_per_s": e.get("scenarios_per_s"),
         "window_s": e.get("knobs", {}).get("duration_s"),
         "rows_by_window_s": json.dumps(e.get("rows_by_window_s", {})), "fresh_rows": e.get("fresh", {}).get("usable_rows")}
        for m, e in summary.items() if m in models
    ])
