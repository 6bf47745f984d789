"""Calibration: fit the twin's cost models per base model from the profiling measurements (stage `calibrate`).

    from adaptwin.calibration.fit import calibrate
    paths = calibrate("data/measurements", "data/calibration", ["llama-3.1-8b-instruct"])

reads the measurement tables, fits step time, LoRA overhead, adapter loading, KV capacity and scheduler
overhead (`adaptwin.calibration.models`) from the profiling families only, and writes
``<out_dir>/<model>.json`` in the schema of `adaptwin.calibration.costs` (canonical JSON, atomic).
`adaptwin.validation.runs` re-simulates the serving runs against these files.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from adaptwin.calibration import inputs
from adaptwin.calibration.costs import SCHEMA_VERSION, Calibration, from_dict
from adaptwin.calibration.inputs import Tables, load_tables
from adaptwin.calibration.lora_forms import (
    TABLE_INPUT_TOKENS,
    choose_form,
    compare_forms,
    lora_rows,
    table_output_tokens,
)
from adaptwin.calibration.models import (
    LORA_TERMS,
    Fitted,
    check_lora_slots,
    fit_kv,
    fit_loading,
    fit_lora,
    fit_rank_tile,
    fit_scheduler,
    fit_scrape,
    fit_step,
    fit_swap,
)
from adaptwin.io import write_json
from adaptwin.model_cards import CARDS, ModelCard, card
from adaptwin.params import config_from_section

#: vLLM's default max model length per base model (data card 3): the KV cache must hold one such sequence
MAX_MODEL_LEN: dict[str, int] = {name: c.max_model_len for name, c in CARDS.items() if c.calibratable}
BLOCK_SIZE = 16
#: the model the scheduler-overhead tables (data card 5.5) were measured on. The tables do not record it;
#: they are vLLM 0.8.5 serving runs of the authors' twin study, whose serving runs are all Llama-3.1-8B, and
#: their saturated batches (~153 at A_max 384, ~128 at 448) shrink as Llama-3.1-8B's KV cache does
#: (154k -> 131k tokens; Qwen-2.5-7B keeps 430k -> 381k). An assumption, stated in params.yaml.
LORA_TABLE_MODEL = "llama-3.1-8b-instruct"
#: seconds per registered adapter each time vLLM 0.8.5's LoRA worker checks a batch adapter against its CPU
#: cache (``LRUCacheWorkerLoRAManager.add_adapter`` -> ``list_adapters()``, a Python-level copy of the cache
#: through ``_MappingOrderCacheView``): 0.18 us, the slope between 256 and 512 registered adapters timed on
#: vLLM 0.8.5's own classes under Python 3.12, the interpreter of the 0.8.5 runs' tracebacks
#: (tools/experiments/host_step_costs.py --registry-copy; 0.16 us under 3.11). A host constant, the same for
#: every model. The pipeline charges ``calibration.registry_copy_s`` from params.yaml, 0 (off) by default: with
#: it on, the twin meets the 5.6 / 5.9 throughput and A_max-gap targets, but the surrogates trained on that
#: twin miss theirs (notebook 03, "The LoRA worker's registry copy").
REGISTRY_COPY_S = 1.8e-7

#: seconds one /metrics render of vLLM 0.8.5's API server costs per ``vllm:lora_requests_info`` series and per
#: adapter name in those labels (`adaptwin.twin.frontend`): prometheus_client's ``generate_latest`` timed on
#: this machine (tools/experiments/metrics_scrape.py --render). Host constants, like `REGISTRY_COPY_S`.
SCRAPE_PER_SERIES_S = 9.0e-6
SCRAPE_PER_ENTRY_S = 2.0e-7

__all__ = ["MAX_MODEL_LEN", "CalibrationConfig", "Tables", "calibrate", "fit_model", "fit_models", "load", "load_tables",
           "quality_table", "to_json", "write_calibrations"]


@dataclass(frozen=True)
class CalibrationConfig:
    """The ``calibration:`` section of params.yaml: the models to fit, the model the scheduler-overhead
    tables were measured on, and the LoRA cost form (``auto`` = the profiling cross-validation's choice)."""

    models: tuple[str, ...]
    lora_table_model: str = LORA_TABLE_MODEL
    lora_form: str = "auto"
    registry_copy_s: float = 0.0
    #: measured /metrics render costs (`SCRAPE_PER_SERIES_S`, `SCRAPE_PER_ENTRY_S`); both 0 = no ``frontend``
    #: block, so the twin models no render
    scrape_per_series_s: float = 0.0
    scrape_per_entry_s: float = 0.0

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> CalibrationConfig:
        """The config of a params.yaml ``calibration:`` section; an unknown key, a bad value or a model without
        a model card raises a ValueError naming it."""
        config = config_from_section(cls, section, "calibration")
        for name in (*config.models, config.lora_table_model):
            if name not in MAX_MODEL_LEN:
                raise ValueError(f"calibration: unknown model {name!r}; known: {', '.join(MAX_MODEL_LEN)}")
        return config


def fit_model(tables: Tables, model: str, lora_table_model: str = LORA_TABLE_MODEL,
              lora_form: str = "auto", registry_copy_s: float = 0.0,
              scrape: tuple[float, float] = (0.0, 0.0)) -> dict[str, Fitted]:
    """Every cost model of ``model`` fitted from the profiling families (scheduler first: the step fit
    subtracts its share).

    LoRA: the ``slots`` form whose terms won the cross-validation of `adaptwin.calibration.lora_forms`,
    fitted on the scheduler-overhead tables and the LoRA profiling runs of ``lora_table_model`` (the model
    the tables were measured on) with that model's step time. Another model gets those coefficients scaled
    by its architecture (`transfer_lora`), and its own 5.2-5.3 runs check the result. ``lora_form`` names a
    candidate to use instead of the profiling cross-validation's choice (``auto``), e.g. the one chosen by
    leaving whole serving-run configurations out (`adaptwin.validation.forms`); it is still fitted on
    profiling rows only. ``registry_copy_s`` > 0 (e.g. the measured `REGISTRY_COPY_S`) is the cost of the LoRA
    worker's cache copy: taken out of every fitting row that carries it, and charged by the twin. ``scrape``
    (per series, per adapter name, in s) adds the ``frontend`` block: the API server's /metrics renders, with
    the fixed part read from ``model``'s own base-model profiling runs.
    """
    for name in (model, lora_table_model):
        if name not in MAX_MODEL_LEN:
            raise ValueError(f"calibration.models: unknown model {name!r}; known: {', '.join(MAX_MODEL_LEN)}")
    sched = fit_scheduler(inputs.scheduler_points(tables))
    sp = sched.block["params"]
    step = fit_step(inputs.decode_points(tables, model), inputs.prefill_points(tables, model), sp)
    lora = _fit_lora(tables, model, lora_table_model, step.block["params"], sp, lora_form, registry_copy_s)
    loading = fit_loading(inputs.loading_points(tables, model))
    fitted = {
        "scheduler": sched,
        "step": Fitted({**step.block, "lora_exempt": []}, step.quality, step.points),
        "lora": lora,
        "loading": loading,
        "swap": _fit_swap(tables, model, lora_table_model, sp, lora_form,
                          (step.block["params"], lora.block["params"], loading), registry_copy_s),
        "kv_capacity": fit_kv(inputs.kv_points(tables, model), MAX_MODEL_LEN[model]),
    }
    if any(scrape):
        fitted["frontend"] = fit_scrape(inputs.scrape_points(tables, model), *scrape)
    return fitted


#: adapter rank of the scheduler-overhead runs (data card 5.5) and the S_max their copy time is read at
#: (the smallest measured slot size: the tables do not record S_max)
TABLE_ADAPTER_RANK = 8


def _fit_swap(tables: Tables, model: str, table_model: str, sched: dict[str, float], lora_form: str,
              own: tuple[dict[str, float], dict[str, float], Fitted], registry_copy_s: float) -> Fitted:
    """The swap cost beyond the copy (`adaptwin.calibration.models.fit_swap`), fitted on the 5.5 tables
    with the table model's step, LoRA and copy costs (``own`` = ``model``'s step params, LoRA params and
    loading fit, used when it is the table model); every model gets the same per-load and per-slot
    milliseconds (the tables name no model, as for the scheduler)."""
    step, lora_params, loading = own
    if model != table_model:
        step = fit_step(inputs.decode_points(tables, table_model), inputs.prefill_points(tables, table_model),
                        sched).block["params"]
        lora_params = _fit_lora(tables, table_model, table_model, step, sched, lora_form,
                                registry_copy_s).block["params"]
        loading = fit_loading(inputs.loading_points(tables, table_model))
    table = loading.block["params"]
    copy_ms = table[min(table, key=int)][str(TABLE_ADAPTER_RANK)]
    points = inputs.swap_table_points(tables, TABLE_INPUT_TOKENS, table_output_tokens(tables))
    return fit_swap(points, step, sched, lora_params, copy_ms)


#: which architecture count each LoRA step coefficient scales with when moved to another model: fixed
#: per-step and per-slot costs with the number of LoRA kernels (layers x target modules), per-adapter and
#: per-token costs with the adapter's width (its weights read, its multiply-adds per token)
TRANSFER_BY: dict[str, str] = {"launch": "lora_kernels", "slots": "lora_kernels", "slot_token": "lora_kernels",
                               "slot_prefill_token": "lora_kernels", "distinct_adapters": "lora_width",
                               "tokens": "lora_width"}


def transfer_lora(params: dict[str, float], source: ModelCard, target: ModelCard
                  ) -> tuple[dict[str, float], dict[str, str]]:
    """``source``'s LoRA step coefficients moved to ``target`` by architecture ratios, with the source of
    every constant (a sentence naming the measured coefficient and the two cards' counts)."""
    out, why = {}, {}
    for term in LORA_TERMS:
        how = TRANSFER_BY[term]
        a, b = getattr(source, how)(), getattr(target, how)()
        out[term] = params[term] * b / a
        why[term] = (f"{source.name} coefficient {params[term]:.6g} s (fitted, see fit_quality.lora) x "
                     f"{how} {b} / {a} ({target.name} / {source.name}, adaptwin.model_cards)")
    return out, why


def _fit_lora(tables: Tables, model: str, table_model: str, step: dict[str, float],
              sched: dict[str, float], lora_form: str = "auto", registry_copy_s: float = 0.0) -> Fitted:
    """The ``slots`` LoRA form of ``model`` (see `fit_model`), with its checks on the profiling runs."""
    own = step if model == table_model else fit_step(
        inputs.decode_points(tables, table_model), inputs.prefill_points(tables, table_model), sched).block["params"]
    rows = lora_rows(tables, table_model, own, sched, registry_copy_s)
    comparison = compare_forms(rows)
    best = choose_form(comparison) if lora_form == "auto" else _named_form(comparison, lora_form)
    params = {t: float(best[f"coef_{t}"]) for t in LORA_TERMS}
    sources = {t: f"{table_model}: fitted on the 5.5 tables and its 5.2-5.3 LoRA runs, form {best['form']}"
               for t in LORA_TERMS}
    if model != table_model:
        params, sources = transfer_lora(params, card(table_model), card(model))
    if registry_copy_s > 0:  # off: the calibration of a twin without the term, unchanged
        params["registered_adapter"] = registry_copy_s
        sources["registered_adapter"] = (
            f"host: vLLM 0.8.5's LoRA worker copies its CPU cache per batch adapter, {registry_copy_s * 1e6:.2f} us "
            f"per registered adapter (calibration.registry_copy_s; measured: calibration.fit.REGISTRY_COPY_S)")
    tile = fit_rank_tile(inputs.lora_points(tables, model))  # the model's own 5.3 runs
    params["rank_tile_adapter"] = tile.block["rank_tile_adapter"]
    sources["rank_tile_adapter"] = (f"{model}: its own 5.3 runs, TPOT at S_max 32 minus S_max 8-16 (batch 1, one "
                                    f"adapter) per extra rank tile, {tile.block['rank_tile_adapter'] * 1000:.3f} ms")
    check, ratio, points = check_lora_slots(inputs.lora_points(tables, model), step, sched, params)
    quality = {**check, "form": "slots", "lora_exempt": [], "chosen_form": best["form"], "table_model": table_model,
               "chosen_by": "profiling cross-validation" if lora_form == "auto" else "calibration.lora_form",
               "profiling_choice": choose_form(comparison)["form"],
               "forms": comparison.to_dicts(), "constants": sources,
               "profiling_measured_over_predicted": ratio, "rank_tile": tile.quality,
               "profiling_forms": fit_lora(inputs.lora_points(tables, model), step, sched).quality}
    return Fitted({"form": "slots", "params": params}, quality, points)


def _named_form(comparison: pl.DataFrame, name: str) -> dict[str, Any]:
    """The row of candidate ``name`` (a clear error naming the known ones otherwise)."""
    row = comparison.filter(pl.col("form") == name)
    if row.height != 1:
        raise ValueError(f"calibration.lora_form: unknown form {name!r}; known: auto, "
                         f"{', '.join(comparison['form'])}")
    return row.row(0, named=True)


def to_json(model: str, fitted: dict[str, Fitted]) -> dict[str, Any]:
    """The calibration JSON (schema of `adaptwin.calibration.costs`) for ``model``; checked by parsing it back."""
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "max_model_len": MAX_MODEL_LEN[model],
        "block_size": BLOCK_SIZE,
        **{name: copy.deepcopy(f.block) for name, f in fitted.items()},
        "fit_quality": {name: copy.deepcopy(f.quality) for name, f in fitted.items()},
        "sources": {
            "step": "default latency (data card 5.1): decode runs output/ (ITL at mean running) and prefill "
                    "runs input/ (duration per token-budget step)",
            "lora": "scheduler overhead tables (5.5, rows without offloading or queue) and the LoRA profiling "
                    "runs (5.2-5.3) of the table model: LoRA seconds per step vs distinct adapters, A_max and "
                    "tokens (with calibration.registry_copy_s > 0, once the registry copy, registered_adapter x "
                    "distinct x registered: 5.5 cpu_loras, 5.2-5.3 served, is taken out); terms chosen by "
                    "leave-one-A_max-out / leave-one-rate-group-out cross-validation; "
                    "other models: architecture ratios (fit_quality.lora.constants)",
            "loading": "adapter loading (5.3): mean of the per-request CPU->GPU loads in server_out.log",
            "swap": "scheduler overhead tables (5.5, busy rows without queue, swapping or not): mean step "
                    "time (duration / steps) minus the twin's step, LoRA (at the distinct adapters the twin "
                    "forms) and 5.3 copy costs, against CPU->GPU "
                    "loads per step (x A_max + 1); candidate chosen by leave-one-A_max-out error "
                    "(fit_quality.swap); model not recorded",
            "kv_capacity": "available GPU memory (5.4): 'GPU KV cache size' and memory failures",
            "scheduler": "scheduler overhead tables (5.5): total_scheduling_time / steps against running "
                         "requests and the waiting requests the admission loop examines (the whole queue in "
                         "adapter-bound rows, none otherwise: calibration.inputs.visited_estimate); model not "
                         "recorded",
            **({"frontend": "the median poll time of the base-model profiling runs (5.1: time between polls "
                            "minus the poller's 2 s sleep); per series and per adapter name: prometheus_client's "
                            "render timed on this machine (calibration.scrape_per_series_s, "
                            "calibration.scrape_per_entry_s; tools/experiments/metrics_scrape.py)"}
               if "frontend" in fitted else {}),
            "excluded": "serving runs (real_results, heterogeneous_results, motivation) are never used for fitting",
            "lora_constants": copy.deepcopy(fitted["lora"].quality.get("constants", {})),
            "model_card": [f"adaptwin.model_cards: {model} ({card(model).hub_id}), {card(model).vllm_version}",
                           *card(model).sources],
        },
    }
    from_dict(data, source=f"<calibration of {model}>")  # the twin must be able to read what we write
    return data


def fit_models(measurements_dir: str | Path, models: list[str], lora_table_model: str = LORA_TABLE_MODEL,
               lora_form: str = "auto", registry_copy_s: float = 0.0,
               scrape: tuple[float, float] = (0.0, 0.0)) -> dict[str, dict[str, Fitted]]:
    """Every cost model of each of ``models``, fitted from the profiling tables under ``measurements_dir``
    (the residual figures of `adaptwin.figures.twin.calibration_figures` draw these)."""
    tables = load_tables(measurements_dir)
    return {m: fit_model(tables, m, lora_table_model, lora_form, registry_copy_s, scrape) for m in models}


def write_calibrations(fitted: dict[str, dict[str, Fitted]], out_dir: str | Path) -> dict[str, Path]:
    """Write ``<out_dir>/<model>.json`` for each fitted model; returns the written paths."""
    return {m: write_json(Path(out_dir) / f"{m}.json", to_json(m, f)) for m, f in fitted.items()}


def calibrate(measurements_dir: str | Path, out_dir: str | Path, models: list[str],
              lora_table_model: str = LORA_TABLE_MODEL, lora_form: str = "auto",
              registry_copy_s: float = 0.0, scrape: tuple[float, float] = (0.0, 0.0)) -> dict[str, Path]:
    """Fit and write ``<out_dir>/<model>.json`` for each model; returns the written JSON paths."""
    return write_calibrations(fit_models(measurements_dir, models, lora_table_model, lora_form, registry_copy_s,
                                         scrape), out_dir)


def quality_table(paths: dict[str, Path]) -> pl.DataFrame:
    """One row per (model, cost model, check): the fit-quality numbers of written calibration files."""
    rows = []
    for model, path in paths.items():
        quality = json.loads(Path(path).read_text())["fit_quality"]
        for cost, checks in quality.items():
            flat = {"": checks} if "n" in checks else {k: v for k, v in checks.items() if isinstance(v, dict)}
            for check, q in flat.items():
                rows.append({"model": model, "cost_model": cost, "check": check or "fit", "n": q.get("n"),
                             "r2": q.get("r2"), "mean_abs_rel_err_pct": q.get("mean_abs_rel_err_pct"),
                             "max_abs_rel_err_pct": q.get("max_abs_rel_err_pct")})
    return pl.DataFrame(rows, infer_schema_length=None)


def load(model: str, calibration_dir: str | Path) -> Calibration:
    """The `Calibration` of ``model`` written by `calibrate`."""
    from adaptwin.calibration.costs import load_calibration

    return load_calibration(Path(calibration_dir) / f"{model}.json")
