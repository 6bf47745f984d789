"""The claims report: each quantitative claim of the paper beside the number this pipeline measured.

Numbers are read from the stages' metrics files (``data/metrics/*.json``), never typed in; a claim whose
number is missing is reported as "not measured" rather than guessed. The verdict compares the measured value
with adaptwin's own target for that claim (stricter than the paper where the issues say so).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Claim:
    """One quantitative claim and where its measured value lives."""

    claim: str  # the paper's wording
    paper: str  # the paper's number, as the paper states it
    metrics_file: str  # file name under data/metrics/
    keys: tuple[str, ...]  # dotted paths tried in order; the first present one is the measurement
    op: str  # "<=" or ">=" or "is-true"
    target: float  # adaptwin's target for the measured value
    unit: str
    measured_by: str  # the stage (and command) that measures it


CLAIMS: tuple[Claim, ...] = (
    Claim("Digital twin reproduces real throughput (usual SMAPE)", "<5 % (their SMAPE, no /2; about 8-10 % usual)",
          "twin_validation.json", ("throughput_smape_pct",), "<=", 5.0, "%",
          "stage validate_twin (notebook 03): every ok/memory_error Llama-3.1-8B real run re-simulated"),
    Claim("Digital twin throughput error in the paper's convention", "<5 %",
          "twin_validation.json", ("throughput_smape_pct_paper_convention",), "<=", 5.0, "%",
          "stage validate_twin, same runs, SMAPE without the /2"),
    Claim("Digital twin ITL error (usual SMAPE)", "19 % (authors' twin on the same runs)",
          "twin_validation.json", ("itl_smape_pct",), "<=", 10.0, "%", "stage validate_twin"),
    Claim("Starvation verdict of the twin agrees with the real run", "96 %",
          "twin_validation.json", ("starvation_agreement_pct",), ">=", 95.0, "%", "stage validate_twin"),
    Claim("Memory errors of the twin agree with vLLM's", "not reported",
          "twin_validation.json", ("memory_error_agreement_pct",), ">=", 100.0, "%", "stage validate_twin"),
    Claim("Twin is faster than benchmarking (one simulated hour, worst representative configuration)",
          "up to 90x", "twin_speed.json", ("min_speedup", "speedup.min"), ">=", 1000.0, "x real time",
          "stage twin_speed (benchmarks/twin_speed.py): simulated seconds per wall second on one core"),
    Claim("Surrogate throughput SMAPE on real runs, Llama-3.1-8B (usual SMAPE)",
          "4.39 % their convention = about 8.8 % usual", "surrogates.json",
          ("llama-3.1-8b-instruct.real_runs.throughput_smape_pct", "real_runs.throughput_smape_pct"),
          "<=", 5.0, "%", "stage train_surrogates (notebook 05): CatBoost on twin data, tested on real runs"),
    Claim("Surrogate starvation macro-F1 on real runs, Llama-3.1-8B", ">0.9 (0.95)", "surrogates.json",
          ("llama-3.1-8b-instruct.real_runs.starvation_macro_f1", "real_runs.starvation_macro_f1"),
          ">=", 0.95, "", "stage train_surrogates"),
    Claim("Surrogate throughput SMAPE on real runs at configurations it never saw (usual SMAPE)",
          "not reported", "surrogates.json",
          ("llama-3.1-8b-instruct.real_runs_unseen_configs.throughput_smape_pct",
           "real_runs_unseen_configs.throughput_smape_pct"),
          "<=", 5.0, "%", "stage train_surrogates: 3-fold refits without the twin rows of the runs' configurations"),
    Claim("Surrogate starvation macro-F1 on real runs at configurations it never saw", "not reported",
          "surrogates.json",
          ("llama-3.1-8b-instruct.real_runs_unseen_configs.starvation_macro_f1",
           "real_runs_unseen_configs.starvation_macro_f1"),
          ">=", 0.95, "", "stage train_surrogates, same refits"),
    Claim("Surrogate prediction time, one at a time", "<0.3 ms (0.15-0.25 ms)", "surrogates.json",
          ("llama-3.1-8b-instruct.ms_per_prediction_single", "ms_per_prediction_single"),
          "<=", 0.3, "ms", "stage train_surrogates, timed in the notebook"),
    Claim("Surrogate prediction time, batched", "not reported", "surrogates.json",
          ("llama-3.1-8b-instruct.ms_per_prediction_batched", "ms_per_prediction_batched"),
          "<=", 0.01, "ms", "stage train_surrogates"),
    Claim("Proposed placement never uses more GPUs than a baseline", "fewer GPUs than the baselines",
          "placement.json", ("proposed_never_more_gpus",), "is-true", 1.0, "", "stage placement (notebook 06)"),
    Claim("Proposed placement: starved GPUs when re-simulated by the twin", "0", "placement.json",
          ("proposed_starved_gpus",), "<=", 0.0, "GPUs",
          "stage placement, every GPU re-simulated (greedy + twin repair and shrink; verification uses another seed)"),
    Claim("Proposed placement before the twin repair: GPUs the surrogate-only greedy got wrong", "not reported",
          "placement.json", ("proposed_repaired_gpus",), "<=", 0.0, "GPUs",
          "stage placement: GPUs the repair's twin check failed (bar 0.92 x ideal)"),
    Claim("Proposed placement: memory errors when re-simulated", "0", "placement.json",
          ("proposed_memory_errors",), "<=", 0.0, "GPUs", "stage placement"),
    Claim("Proposed placement GPUs over the lower bound, mean", "not reported", "placement.json",
          ("proposed_mean_ratio_to_lower_bound",), "<=", 1.10, "x",
          "stage placement: load / best GPU throughput, raised to 2 where the twin serves no one-GPU placement"),
    Claim("Proposed placement GPUs over the load formula alone, mean", "not reported", "placement.json",
          ("proposed_mean_ratio_to_load_bound",), "<=", 1.10, "x",
          "stage placement: load / best GPU throughput, rounded up, without the twin's one-GPU check"),
)


def lookup(data: dict[str, Any], dotted: str) -> Any:
    """``data['a']['b']`` for ``'a.b'``; keys may themselves contain dots (model names), so match greedily."""
    if dotted in data:
        return data[dotted]
    for key in sorted(data, key=len, reverse=True):
        if isinstance(data[key], dict) and dotted.startswith(f"{key}."):
            found = lookup(data[key], dotted[len(key) + 1 :])
            if found is not None:
                return found
    return None


def evaluate(claim: Claim, metrics_dir: Path) -> dict[str, Any]:
    """The measured value of one claim and its verdict ("holds", "does not hold", "not measured")."""
    path = metrics_dir / claim.metrics_file
    value = None
    if path.exists():
        data = json.loads(path.read_text())
        value = next((v for k in claim.keys if (v := lookup(data, k)) is not None), None)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {"value": None, "verdict": "not measured"}
    if claim.op == "is-true":
        ok = bool(value)
    elif claim.op == "<=":
        ok = float(value) <= claim.target
    else:
        ok = float(value) >= claim.target
    return {"value": value, "verdict": "holds" if ok else "does not hold"}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def claims_table(metrics_dir: Path) -> list[dict[str, Any]]:
    """One row per claim: claim, paper, measured, target, verdict, source."""
    rows = []
    for c in CLAIMS:
        result = evaluate(c, metrics_dir)
        target = "true" if c.op == "is-true" else f"{c.op} {c.target:g} {c.unit}".strip()
        rows.append({
            "claim": c.claim, "paper": c.paper, "measured": _fmt(result["value"]),
            "unit": c.unit, "target": target, "verdict": result["verdict"],
            "source": f"{c.metrics_file}: {c.measured_by}",
        })
    return rows


def render_claims(rows: list[dict[str, Any]]) -> str:
    """Markdown of the claims table with a one-line summary of the verdicts."""
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("holds", "does not hold", "not measured")}
    lines = [
        "# Claims of the paper and what adaptwin measured",
        "",
        "Generated by stage `report` (`dvc repro report`) from `data/metrics/*.json`; do not edit by hand.",
        "SMAPE is the usual symmetric definition |a-b| / ((|a|+|b|)/2) unless a row says otherwise.",
        "",
        f"Verdicts: {counts['holds']} hold, {counts['does not hold']} do not hold, "
        f"{counts['not measured']} not measured.",
        "",
        "| claim | paper | measured | target | verdict | measured by |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        measured = f"{r['measured']} {r['unit']}".strip() if r["measured"] != "-" else "-"
        lines.append(f"| {r['claim']} | {r['paper']} | {measured} | {r['target']} | **{r['verdict']}** | {r['source']} |")
    return "\n".join(lines) + "\n"


def write_claims(metrics_dir: str | Path, out_path: str | Path) -> list[dict[str, Any]]:
    """Evaluate every claim from ``metrics_dir`` and write the markdown report to ``out_path`` atomically."""
    from adaptwin.io import write_text

    rows = claims_table(Path(metrics_dir))
    write_text(out_path, render_claims(rows))
    return rows
