"""The placement stage (notebook 06): every method on every workload of the grid, twin verification, the
single-GPU experiment, and the outputs under ``data/placement/`` and ``data/metrics/placement.json``.

Outputs (``out_dir`` = data/placement):
- ``workloads/<workload>.csv``: each generated workload (``adapter_id,rank,rate``), so `adaptwin place` can
  be re-run on it;
- ``<workload>/<method>/``: placement.json, routing.csv, serve_gpu<N>.sh (the CLI's output, same writer);
- ``summary.parquet``: one row per (workload, method): GPUs, lower bound, ratio, placement time, predicted
  unsafe GPUs, and after twin verification starved GPUs, memory errors, throughput, ITL;
- ``verification.parquet``: one row per re-simulated GPU;
- ``single_gpu.parquet``: per (adapters to serve, method): chosen A_max and twin throughput (Fig. 10);
- ``placement_times.md``: mean placement time per method (Table 6).
Headline numbers go to ``data/metrics/placement.json`` (`headline`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adaptwin.io import atomic_write, write_json, write_parquet, write_text
from adaptwin.placement import pipeline, verify, workloads
from adaptwin.placement.api import Context
from adaptwin.placement.core import PREDICTED_KEYS, Gpu, Placement, PlacementError
from adaptwin.placement.export import write_placement
from adaptwin.placement.methods import BASELINES, METHODS, PROPOSED, REGISTRY
from adaptwin.placement.methods import REPAIRED as REPAIRED  # re-exported: the stage's repaired methods

#: keys of the ``placement:`` section that configure the placement context (`api.make_context`), not the stage
CONTEXT_KEYS = frozenset({"margin", "starvation_threshold", "load_headroom", "max_served", "extensions",
                          "twin_lower_bound"})


@dataclass
class StageConfig:
    """The ``placement:`` section of params.yaml (see there for what each knob does)."""

    model: str
    methods: Sequence[str] = METHODS
    grid: dict[str, Any] = field(default_factory=dict)
    verify_duration_s: float = 600.0
    verify_workers: int = 2
    single_gpu_adapters: Sequence[int] = (8, 32, 64, 128, 256)
    single_gpu_rate: float = 0.05
    single_gpu_rank_mix: str = "8-16"
    repair: bool = True  # twin-in-the-loop repair of the proposed methods' placements
    repair_duration_s: float = 1200.0  # simulated seconds per GPU in each repair check

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in REGISTRY]
        if unknown:
            raise PlacementError(f"placement.methods: unknown {unknown}; known: {list(METHODS)}")
        if self.verify_duration_s <= 0:
            raise PlacementError(f"placement.verify_duration_s: must be > 0, got {self.verify_duration_s}")

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> StageConfig:
        """The stage's configuration from the ``placement:`` section of params.yaml. The context's keys
        (`CONTEXT_KEYS`) are left to `api.make_context`; any other key that is no field is refused, so a
        misspelt knob fails instead of silently keeping its default."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - names - CONTEXT_KEYS)
        if unknown:
            raise PlacementError(f"placement: unknown keys {unknown}; known: {sorted(names | CONTEXT_KEYS)}")
        return cls(**{k: v for k, v in section.items() if k in names})


def run_grid(cfg: StageConfig, context: Context, shared_dir: str | Path, out_dir: str | Path,
             calibration: Any = None) -> tuple[list[Placement], list[dict[str, Any]]]:
    """Generate every workload of the grid, place it with every method (`pipeline.run`; the methods the twin
    repairs are repaired and shrunk when ``cfg.repair`` and a calibration is given), write each placement."""
    out = Path(out_dir)
    placements, labels = [], []
    checked: dict[str, dict] = {}  # twin checks shared by the repairs of every method and workload
    for spec in workloads.expand_grid(cfg.grid):
        frame = workloads.generate(spec, shared_dir)
        _write_csv(out / "workloads" / f"{spec.name}.csv", frame)
        for method in cfg.methods:
            repair = cfg.repair and calibration is not None and REGISTRY[method].twin_repairs
            options = pipeline.Options(repair=repair, duration_s=cfg.repair_duration_s, workers=cfg.verify_workers)
            p = pipeline.run(frame, context, method, options, cache=checked, calibration=calibration)
            write_placement(p, out / spec.name / method)
            placements.append(p)
            labels.append({"workload": spec.name, "kind": spec.kind, "adapters": spec.adapters,
                           "rank_mix": spec.rank_mix, "multiplier": spec.multiplier})
    return placements, labels


def _write_csv(path: Path, frame: pl.DataFrame) -> Path:
    return atomic_write(path, lambda p: frame.write_csv(p))


def placement_rows(placements: Sequence[Placement], labels: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """One row per placement: the label, method, GPUs, lower bound, ratio, time, predicted-unsafe GPUs."""
    return pl.DataFrame([_placement_row(p, label) for p, label in zip(placements, labels, strict=True)])


def _placement_row(p: Placement, label: dict[str, Any]) -> dict[str, Any]:
    """`placement_rows`'s row of one placement (a count a step did not record is 0)."""
    notes = p.notes
    return {**label, "method": p.method, "gpus_used": p.num_gpus, "lower_bound_gpus": p.lower_bound_gpus,
            "load_bound_gpus": int(notes.get("load_bound_gpus", p.lower_bound_gpus)),
            "ratio_to_lower_bound": p.num_gpus / p.lower_bound_gpus, "placement_time_s": p.placement_time_s,
            "predicted_unsafe_gpus": int(notes.predicted_unsafe_gpus or 0),
            "repair_time_s": float(notes.repair_time_s or 0.0),
            "repaired_gpus": int(notes.repaired_gpus or 0),
            "unsplit_adapters": int(notes.unsplit_adapters or 0),
            "shrunk_gpus": int(notes.shrunk_gpus or 0),
            "split_adapters": int(notes.split_adapters or 0),
            "predicted_itl_mean_ms": float(np.mean([g.predicted["itl_mean_ms"] for g in p.gpus]))}


def summary_table(placements: Sequence[Placement], labels: Sequence[dict[str, Any]],
                  per_gpu: pl.DataFrame) -> pl.DataFrame:
    """Placement rows joined with their verification summary."""
    verified = verify.summarize(per_gpu, ("workload", "method")).drop("gpus")
    return placement_rows(placements, labels).join(verified, on=["workload", "method"], how="left")


def single_gpu(cfg: StageConfig, context: Context, calibration: Any) -> pl.DataFrame:
    """Fig. 10: for each count of adapters to serve on one GPU, each method's A_max (`methods.Method.one_gpu`)
    and the twin's throughput.

    Proposed: the A_max Algorithm 1's walk reaches (`greedy.walk_a_max`); LoRAServe: its operating point for
    the largest rank (capped by what the served count and memory allow); FFD, dLoRA and round robin: the
    largest A_max memory allows. The greedy's variants pick what the greedy picks and are left out."""
    ev = context.evaluator
    rows, jobs = [], []
    for n in cfg.single_gpu_adapters:
        spec = workloads.WorkloadSpec(kind="uniform", adapters=int(n), rank_mix=cfg.single_gpu_rank_mix,
                                      mean_rate=cfg.single_gpu_rate)
        frame = workloads.generate(spec)
        ranks, rates = frame["rank"].to_numpy(), frame["rate"].to_numpy()
        s_max = int(ranks.max())
        for method in cfg.methods:
            choose = REGISTRY[method].one_gpu
            if choose is None:
                continue
            max_loras = choose(ranks, rates, s_max, ev)
            gpu = ev.judge(ranks, rates, max_loras)
            rows.append({"adapters": int(n), "method": method, "max_loras": max_loras, "max_lora_rank": s_max,
                         "predicted_total_throughput": gpu["total_throughput"],
                         "predicted_starvation_probability": gpu["starvation_probability"]})
            jobs.append(Placement(context.model, method, frame, [_one_gpu(frame, max_loras, s_max, gpu)], 1))
    per_gpu = verify.verify(jobs, calibration, cfg.verify_duration_s, cfg.verify_workers)
    twin = per_gpu.select("total_throughput", "ideal_throughput", "itl_mean_ms", "starved", "memory_error")
    return pl.concat([pl.DataFrame(rows), twin], how="horizontal")


def _one_gpu(frame: pl.DataFrame, max_loras: int, s_max: int, judged: dict[str, float]) -> Gpu:
    return Gpu(tuple(range(frame.height)), max_loras, s_max, {k: judged[k] for k in PREDICTED_KEYS})


def placement_times(summary: pl.DataFrame) -> pl.DataFrame:
    """Table 6: mean (and max) placement time per method, in seconds, and the mean twin-repair time (kept
    apart: placement time is the surrogate-only method)."""
    repair_s = pl.col("repair_time_s").mean() if "repair_time_s" in summary.columns else pl.lit(0.0)
    return (summary.group_by("method", maintain_order=True)
            .agg(pl.col("placement_time_s").mean().alias("mean_s"), pl.col("placement_time_s").max().alias("max_s"),
                 repair_s.alias("mean_repair_s"), pl.len().alias("workloads")))


def times_markdown(times: pl.DataFrame) -> str:
    """Table 6 as Markdown."""
    lines = ["| method | mean placement time (s) | max (s) | mean twin repair (s) | workloads |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['mean_s']:.4f} | {r['max_s']:.4f} | {r['mean_repair_s']:.2f} | {r['workloads']} |"
              for r in times.iter_rows(named=True)]
    return "\n".join(lines) + "\n"


def headline(summary: pl.DataFrame, context: Context) -> dict[str, Any]:
    """The metrics file: per workload and method GPUs, ratio to the lower bound, verified starved GPUs and
    memory errors, placement times; and the claims the report checks (``proposed_*``).

    ``proposed_never_more_gpus`` compares the proposed greedy with every baseline placement that is valid
    when re-simulated (no starved GPU, no memory error): a baseline that starves its GPUs (round robin on the
    minimum count, by design) does not serve the workload, so its count is no competitor.
    ``proposed_never_more_gpus_any`` compares with all of them."""
    per_workload: dict[str, Any] = {}
    never, never_any = True, True
    for name in summary["workload"].unique(maintain_order=True).to_list():
        rows = {r["method"]: r for r in summary.filter(pl.col("workload") == name).iter_rows(named=True)}
        first = next(iter(rows.values()))
        per_workload[name] = {"lower_bound_gpus": first["lower_bound_gpus"],
                              "load_bound_gpus": first["load_bound_gpus"], "methods": {
            m: {k: _json_value(r[k]) for k in ("gpus_used", "ratio_to_lower_bound", "starved_gpus", "memory_errors",
                                               "twin_errors", "placement_time_s", "repair_time_s", "repaired_gpus",
                                               "shrunk_gpus", "split_adapters", "total_throughput", "itl_mean_ms")}
            for m, r in rows.items()}}
        if PROPOSED in rows:
            mine = rows[PROPOSED]["gpus_used"]
            for m in BASELINES:
                if m in rows:
                    never_any &= mine <= rows[m]["gpus_used"]
                    if not (rows[m]["starved_gpus"] or rows[m]["memory_errors"] or rows[m]["twin_errors"]):
                        never &= mine <= rows[m]["gpus_used"]
    proposed = summary.filter(pl.col("method") == PROPOSED)
    times = placement_times(summary)
    return {
        "model": context.model,
        "lower_bound_source": context.best_throughput_source,
        "best_gpu_throughput": context.best_throughput,
        "tokens_per_request": context.evaluator.tokens_per_request,
        "margin": context.evaluator.margin,
        "load_headroom": context.evaluator.load_headroom,
        "margin_source": context.margin_source,
        "workloads": per_workload,
        "gpus_per_method": {r["method"]: int(r["gpus_used"]) for r in
                            summary.group_by("method", maintain_order=True).agg(pl.col("gpus_used").sum()).iter_rows(named=True)},
        "placement_time_s": {r["method"]: r["mean_s"] for r in times.iter_rows(named=True)},
        "repair_time_s": {r["method"]: r["mean_repair_s"] for r in times.iter_rows(named=True)},
        "proposed_repaired_gpus": int(proposed["repaired_gpus"].sum()) if proposed.height else None,
        "proposed_shrunk_gpus": int(proposed["shrunk_gpus"].sum()) if proposed.height else None,
        "proposed_never_more_gpus": bool(never) if proposed.height else None,
        "proposed_never_more_gpus_any": bool(never_any) if proposed.height else None,
        "proposed_starved_gpus": int(proposed["starved_gpus"].sum()) if proposed.height else None,
        "proposed_memory_errors": int(proposed["memory_errors"].sum()) if proposed.height else None,
        "proposed_mean_ratio_to_lower_bound": float(proposed["ratio_to_lower_bound"].mean()) if proposed.height else None,
        "proposed_mean_ratio_to_load_bound": (float((proposed["gpus_used"] / proposed["load_bound_gpus"]).mean())
                                              if proposed.height else None),
    }


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def run_stage(cfg: StageConfig, context: Context, calibration: Any, shared_dir: str | Path,
              out_dir: str | Path, metrics_path: str | Path) -> dict[str, pl.DataFrame]:
    """Everything the stage produces; returns the tables the notebook plots."""
    out = Path(out_dir)
    placements, labels = run_grid(cfg, context, shared_dir, out, calibration)
    per_gpu = verify.verify(placements, calibration, cfg.verify_duration_s, cfg.verify_workers, labels=labels)
    summary = summary_table(placements, labels, per_gpu)
    one_gpu = single_gpu(cfg, context, calibration)
    times = placement_times(summary)
    write_parquet(out / "verification.parquet", per_gpu)
    write_parquet(out / "summary.parquet", summary)
    write_parquet(out / "single_gpu.parquet", one_gpu)
    write_text(out / "placement_times.md", times_markdown(times))
    write_json(metrics_path, headline(summary, context))
    return {"summary": summary, "verification": per_gpu, "single_gpu": one_gpu, "times": times}
