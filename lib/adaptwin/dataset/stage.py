"""The ``dataset`` stage (notebook 04): sample scenarios per model, sweep them through the twin, summarise.

Output: ``<data>/dataset/<model>/chunk-*.parquet`` (resumable sweep, see `adaptwin.sweep`),
``<data>/dataset/duration_check/<model>/<seconds>/`` (the duration-bias check) and
``<data>/dataset/summary.json`` (rows, wall time, scenarios per second, error and starvation counts, bias).

Why a duration check: simulating shorter windows than the real runs' 3,600 s would be cheaper, but a starved
GPU never reaches a steady state: its backlog keeps growing, so its batch, throughput, ITL and TTFT keep
rising over the window (measured with the smoke calibration: a 600 s window gave 23 % lower throughput on
average than 3,600 s for starved scenarios, up to 45 %). The targets are therefore defined on the real runs'
3,600 s window, and the check re-simulates some scenarios at ``short_s`` to keep that bias measured.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adaptwin.dataset.mixes import TEST_LAWS, TRAIN_LAWS, mix_scenarios
from adaptwin.dataset.sampler import (
    SamplerConfig,
    grid_variant_scenarios,
    real_grid_scenarios,
    sample_scenarios,
)
from adaptwin.layout import Layout
from adaptwin.params import config_from_section
from adaptwin.sweep import SweepReport, load_dataset, run_sweep
from adaptwin.twin.scenario import scenario_id


@dataclass(frozen=True)
class DatasetKnobs:
    """The ``dataset:`` section of params.yaml for one model."""

    n_scenarios: int
    duration_s: float = 600.0
    seed: int = 0
    include_real_grid: bool = True
    real_grid_fraction: float = 1.0
    grid_variants: int = 0
    load_range: tuple[float, float] = (0.01, 20.0)
    boundary_fraction: float = 0.5
    boundary_band: tuple[float, float] = (0.15, 1.5)
    unpredictable_fraction: float = 0.25
    engine: str = field(default="dask", metadata={"choices": ("dask", "serial")})
    n_workers: int = 2
    scheduler_address: str | None = None
    chunk_size: int = 100
    batch_size: int = 2
    mix_scenarios: int = 0  # placement-shaped scenarios (`adaptwin.dataset.mixes`) added to the design
    mix_laws: tuple[str, ...] = TRAIN_LAWS
    short_mix_scenarios: int = 0  # the same mix draws again, simulated over short_window_s (cheap rows)
    short_window_s: float = 600.0
    fresh_scenarios: int = 0  # the fresh test set (its own directory; never trained on)
    fresh_seed: int = 1
    fresh_laws: tuple[str, ...] = TEST_LAWS


@dataclass(frozen=True)
class DatasetConfig:
    """The whole ``dataset:`` section: the models, their per-model counts, the duration check, and the knobs
    every model shares (`DatasetKnobs`, whose ``n_scenarios`` and ``mix_scenarios`` come from here)."""

    models: tuple[str, ...]
    n_scenarios: int | list[int]  # one count for every model, or one per model in ``models`` order
    knobs: DatasetKnobs
    mix_scenarios: int | list[int] = 0
    short_mix_scenarios: int | list[int] = 0
    duration_check_scenarios: int = 0  # scenarios re-simulated at duration_check_short_s (0 = no check)
    duration_check_short_s: float = 600.0

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> DatasetConfig:
        """The config of a params.yaml ``dataset:`` section; an unknown key or a bad value raises a
        ValueError naming it."""
        own = [f for f in cls.__dataclass_fields__ if f != "knobs"]
        known = own + [f for f in DatasetKnobs.__dataclass_fields__ if f not in own]
        for key in section:
            if key not in known:
                raise ValueError(f"dataset.{key}: unknown key; known: {', '.join(known)}")
        shared = {k: v for k, v in section.items() if k not in own}
        knobs = config_from_section(DatasetKnobs, {**shared, "n_scenarios": 0}, "dataset")
        return config_from_section(cls, {**{k: v for k, v in section.items() if k in own}, "knobs": knobs},
                                   "dataset")

    def model_knobs(self) -> list[DatasetKnobs]:
        """The knobs of each model, in ``models`` order, with its own scenario and mix counts."""
        counts = per_model(self.n_scenarios, list(self.models), "n_scenarios")
        mixes = per_model(self.mix_scenarios, list(self.models), "mix_scenarios")
        short = per_model(self.short_mix_scenarios, list(self.models), "short_mix_scenarios")
        return [replace(self.knobs, n_scenarios=n, mix_scenarios=m, short_mix_scenarios=k)
                for n, m, k in zip(counts, mixes, short, strict=True)]


def sampler_config(model: str, knobs: DatasetKnobs, duration_s: float | None = None) -> SamplerConfig:
    """The sampler settings of these knobs (optionally at another duration)."""
    return SamplerConfig(model, duration_s=duration_s or knobs.duration_s, load_range=tuple(knobs.load_range),
                         boundary_fraction=knobs.boundary_fraction, boundary_band=tuple(knobs.boundary_band),
                         unpredictable_fraction=knobs.unpredictable_fraction)


def scenarios_for(model: str, knobs: DatasetKnobs, calibration: Any) -> list[dict[str, Any]]:
    """The real-run grid (optional), ``n_scenarios`` random scenarios, ``grid_variants`` scenarios with
    other traffic on the grid's server configurations, then ``mix_scenarios`` placement-shaped ones, all at
    ``duration_s``; then ``short_mix_scenarios`` placement-shaped ones at ``short_window_s``.

    Why the short ones: a 600 s window costs the twin about a sixth of the hour's CPU on these GPUs (a starved
    backlog makes each later simulated second dearer), so many more GPUs fit the budget. Their targets are
    biased against the hour; they are the same draws as the first hour mixes (same seed, same stream; only a
    load below the window's floor of requests, `mixes.MIN_REQUESTS`, is raised), so the surrogate, which takes
    the window as a feature, sees the bias pair by pair and predicts the hour."""
    config = sampler_config(model, knobs)
    if knobs.short_mix_scenarios and knobs.short_window_s >= knobs.duration_s:
        raise ValueError(f"dataset.short_window_s: {knobs.short_window_s} is not shorter than duration_s "
                         f"{knobs.duration_s}")
    grid = (real_grid_scenarios(model, knobs.duration_s, calibration, knobs.seed, knobs.real_grid_fraction)
            if knobs.include_real_grid else [])
    return (grid + sample_scenarios(config, knobs.n_scenarios, knobs.seed, calibration)
            + grid_variant_scenarios(config, knobs.grid_variants, knobs.seed, calibration)
            + mix_scenarios(config, knobs.mix_scenarios, knobs.seed, tuple(knobs.mix_laws), calibration)
            + mix_scenarios(sampler_config(model, knobs, knobs.short_window_s), knobs.short_mix_scenarios,
                            knobs.seed, tuple(knobs.mix_laws), calibration))


def fresh_scenarios(model: str, knobs: DatasetKnobs, calibration: Any) -> list[dict[str, Any]]:
    """The fresh test set: placement-shaped scenarios with another seed and other popularity laws than the
    training design (a random split of one draw would flatter the surrogate)."""
    if knobs.fresh_seed == knobs.seed and set(knobs.fresh_laws) <= set(knobs.mix_laws):
        raise ValueError(f"dataset.fresh_seed / fresh_laws: the fresh set must differ from training in seed and "
                         f"law, got seed {knobs.fresh_seed} and laws {list(knobs.fresh_laws)}")
    return mix_scenarios(sampler_config(model, knobs), knobs.fresh_scenarios, knobs.fresh_seed,
                         tuple(knobs.fresh_laws), calibration)


def fresh_dir(data_dir: str | Path, model: str) -> Path:
    """Where the fresh test set of ``model`` is swept."""
    return Layout.at(data_dir).fresh_dataset(model)


def sweep_model(model: str, knobs: DatasetKnobs, calibration: Any, out_dir: str | Path,
                progress: bool = True) -> SweepReport:
    """Sweep one model's scenarios into ``out_dir`` (resuming whatever is already there)."""
    return run_sweep(scenarios_for(model, knobs, calibration), out_dir, calibration=calibration,
                     engine=knobs.engine, n_workers=knobs.n_workers, scheduler_address=knobs.scheduler_address,
                     chunk_size=knobs.chunk_size, batch_size=knobs.batch_size, progress=progress)


def summarise(model: str, report: SweepReport, out_dir: str | Path) -> dict[str, Any]:
    """Rows, wall time and throughput of the sweep (Table 3 of the paper) plus class balance."""
    data = load_dataset(out_dir, include_errors=True)
    good = data.filter(pl.col("error").is_null())
    usable = good.filter(~pl.col("memory_error"))
    return {
        "model": model, "rows": data.height, "errors": data.height - good.height,
        "memory_errors": int(good["memory_error"].sum()), "usable_rows": usable.height,
        "starved_fraction": float(usable["starved"].mean()) if usable.height else float("nan"),
        "evaluated_now": report.evaluated, "resumed_rows": report.skipped,
        "wall_time_s": round(report.wall_time_s, 3), "scenarios_per_s": _round(report.scenarios_per_s),
        "twin_cpu_s_per_scenario": _round(float(good["sweep_wall_time_s"].mean())) if good.height else None,
        "simulated_s_per_wall_s": _round(float((good["duration_s"] / good["sweep_wall_time_s"]).median()))
        if good.height else None,
        "rows_by_window_s": {str(int(w)): n for w, n in
                             good.group_by("duration_s").len().sort("duration_s").iter_rows()},
        "twin_cpu_s_by_window_s": {str(int(w)): _round(c) for w, c in
                                   good.group_by("duration_s").agg(pl.col("sweep_wall_time_s").sum())
                                   .sort("duration_s").iter_rows()},
        "error_examples": dict(list(report.error_messages.items())[:5]),
    }


def duration_check(model: str, knobs: DatasetKnobs, calibration: Any, data_dir: str | Path, *, n: int,
                   short_s: float = 600.0, progress: bool = False) -> dict[str, Any]:
    """Re-simulate the first ``n`` random scenarios of the design at ``short_s`` and compare their targets with
    the dataset rows at ``duration_s`` (same draws, only the window differs)."""
    if n <= 0:
        return {}
    from adaptwin.rules import smape_pct

    main_dir = Layout.at(data_dir).dataset(model)  # the dataset's own rows (already swept)
    short_dir = Layout.at(data_dir).dataset() / "duration_check" / model / f"{int(short_s)}"
    long = sample_scenarios(sampler_config(model, knobs), n, knobs.seed, calibration)
    short = sample_scenarios(sampler_config(model, knobs, short_s), n, knobs.seed, calibration)
    run_sweep(short, short_dir, calibration=calibration, engine="serial", chunk_size=n, progress=progress)
    joined = _paired(main_dir, long).join(_paired(short_dir, short), on="pair", suffix="_short", maintain_order="left")
    out: dict[str, Any] = {"duration_s": knobs.duration_s, "short_s": short_s, "scenarios": joined.height,
                           "starved_scenarios": int(joined["starved"].sum())}
    for target in ("total_throughput", "itl_mean_ms", "ttft_mean_ms"):
        for label, rows in (("", joined), ("_starved", joined.filter(pl.col("starved"))),
                            ("_not_starved", joined.filter(~pl.col("starved")))):
            pair = rows.select(target, f"{target}_short").drop_nulls()
            out[f"{target}_smape_pct{label}"] = _round(smape_pct(pair[target].to_numpy(),
                                                                 pair[f"{target}_short"].to_numpy()))
    out["starvation_agreement_pct"] = _round(100 * float((joined["starved"] == joined["starved_short"]).mean()))
    out["wall_time_ratio"] = _round(float(joined["sweep_wall_time_s"].sum()
                                          / joined["sweep_wall_time_s_short"].sum()))
    return out


def _paired(out_dir: Path, scenarios: list[dict[str, Any]]) -> pl.DataFrame:
    """The rows of ``scenarios`` in the dataset at ``out_dir`` (memory errors dropped), numbered by draw."""
    pairs = pl.DataFrame({"scenario_id": [scenario_id(x) for x in scenarios], "pair": range(len(scenarios))})
    return (load_dataset(out_dir).join(pairs, on="scenario_id", maintain_order="left")  # a join keeps no order
            .filter(~pl.col("memory_error")))


def run_stage(config: DatasetConfig, data_dir: str | Path, calibration_dir: str | Path, *,
              progress: bool = True) -> dict[str, Any]:
    """Everything notebook 04 does for every model; writes and returns ``summary.json``'s content."""
    from adaptwin.calibration.costs import load_calibration
    from adaptwin.io import write_json

    data_dir = Path(data_dir)
    summary: dict[str, Any] = {}
    for model, model_knobs in zip(config.models, config.model_knobs(), strict=True):
        calibration = load_calibration(Path(calibration_dir) / f"{model}.json")
        start = time.perf_counter()
        report = sweep_model(model, model_knobs, calibration, Layout.at(data_dir).dataset(model), progress)
        entry = summarise(model, report, Layout.at(data_dir).dataset(model))
        entry["knobs"] = asdict(model_knobs)
        entry["fresh"] = sweep_fresh(model, model_knobs, calibration, data_dir, progress)
        entry["duration_check"] = duration_check(model, model_knobs, calibration, data_dir,
                                                 n=min(config.duration_check_scenarios, model_knobs.n_scenarios),
                                                 short_s=config.duration_check_short_s)
        entry["stage_wall_time_s"] = round(time.perf_counter() - start, 3)
        summary[model] = entry
    write_json(Layout.at(data_dir).dataset_summary(), summary)
    return summary


def per_model(value: Any, models: list[str], name: str) -> list[int]:
    """One count per model from an int (the same for all) or a list in ``models`` order."""
    counts = value if isinstance(value, list) else [value] * len(models)
    if len(counts) != len(models):
        raise ValueError(f"dataset.{name}: {len(counts)} values for {len(models)} models {models}")
    return [int(c) for c in counts]


def sweep_fresh(model: str, knobs: DatasetKnobs, calibration: Any, data_dir: str | Path,
                progress: bool = False) -> dict[str, Any]:
    """Sweep the fresh test set (`fresh_scenarios`) into `fresh_dir`; its size and speed (empty if none)."""
    if knobs.fresh_scenarios <= 0:
        return {}
    out = fresh_dir(data_dir, model)
    report = run_sweep(fresh_scenarios(model, knobs, calibration), out, calibration=calibration,
                       engine=knobs.engine, n_workers=knobs.n_workers, scheduler_address=knobs.scheduler_address,
                       chunk_size=knobs.chunk_size, batch_size=knobs.batch_size, progress=progress)
    return {k: v for k, v in summarise(model, report, out).items() if k != "error_examples"}


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)
