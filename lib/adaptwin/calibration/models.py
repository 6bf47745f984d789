"""The cost models of the twin, each fitted from one profiling family (data card 5.1-5.5).

Every ``fit_*`` returns a `Fitted`: the JSON block of `adaptwin.calibration.costs` (``{"form", "params"}``), a
``quality`` summary and a ``points`` frame (measured vs predicted per run) for the residual figures.

Why the forms differ from the authors' straight lines:

* **step** (5.1): the twin needs the time of one engine step, not an aggregate latency. In a saturated decode
  run every step holds ~``B`` = mean running sequences, so ITL ≈ step time; in a prefill run (output length 1)
  every step is a full ``max_num_batched_tokens`` prefill chunk, so duration / steps ≈ step time. One joint
  (relative) least-squares fit over both gives intercept, per decode sequence, per context token (attention
  reads the KV of every running sequence: ITL grows with output length at fixed batch), per prefill token
  and per newly admitted sequence (prompts of 111 tokens take 23 % longer per token than prompts of 407).
* **lora** (5.5 with 5.2-5.3): the twin's form is ``slots``, explicit step coefficients: seconds LoRA adds
  to a step = launch + per distinct adapter + per configured slot + per token + per (slot x token),
  slots = A_max + 1. vLLM 0.8.5's Triton LoRA kernels run one tile per adapter present and launch a grid
  row per *slot* (idle rows exit early, but not for free). Which terms the data can tell apart is decided
  in `adaptwin.calibration.lora_forms` by cross-validation over held-out A_max values and rate groups of
  the profiling rows (5.5 tables, 5.2 overhead runs at A_max 300, 5.3 single requests at A_max 1). The
  authors' multiplicative factor (fitted on 5.2 as ITL_lora / no-LoRA step time against the *expected*
  distinct adapters, `fit_lora`) is still fitted and reported for comparison.
* **kv_capacity** (5.4): KV tokens are not linear in A_max x S_max (allocator steps); a piecewise-linear
  curve per S_max through the measured points, linear extrapolation beyond, a global line as fallback for an
  unmeasured S_max, and ``max_feasible`` from the measured failures.
* **loading** (5.3): the measured mean CPU -> GPU load time per (S_max, rank), as the authors.
* **scheduler** (5.5): linear in running and waiting requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import lsq_linear

from adaptwin.calibration.fits import LinearFit, expected_distinct, fit_linear, fit_quality, interp_extrap

#: vLLM 0.8.5 default --max-num-batched-tokens (never set in the corpus, data card 3): prefill chunk per step
TOKEN_BUDGET = 2048
STEP_TERMS = ("intercept", "decode_seqs", "context_tokens", "prefill_tokens", "prefill_seqs")


@dataclass(frozen=True)
class Fitted:
    """One fitted cost model: its JSON block, fit quality, and per-point residuals for figures."""

    block: dict[str, Any]
    quality: dict[str, Any]
    points: pl.DataFrame = field(repr=False)


# ---- scheduler ---------------------------------------------------------------------------------------------
def fit_scheduler(points: pl.DataFrame) -> Fitted:
    """Scheduler seconds per step = intercept + running x a + visited x b (non-negative), ``visited`` = the
    waiting requests the admission loop examines (`adaptwin.calibration.inputs.visited_estimate`), which is
    what the twin charges b for; the JSON keeps the key ``waiting`` for b.

    Why not the queue length (the previous regressor): in the 5.5 tables a queue costs ~0.3 us per request
    per step when the loop walks all of it (adapter-bound rows) and nearly nothing when the loop stops at its
    head, so a coefficient per queued request (0.125 us) undercharges every step of an adapter-bound serving
    run (tools/experiments/scheduler_visits.py)."""
    X = np.column_stack([np.ones(points.height), points["avg_batch_size"], points["visited"]])
    y = points["sched_s"].to_numpy()
    fit = fit_linear(X, y, ("intercept", "running", "waiting"))
    pts = points.with_columns(pl.Series("measured", y), pl.Series("predicted", fit.predict(X)))
    return Fitted({"form": "linear", "params": fit.params()}, {**fit.quality, "waiting_regressor": "visited"}, pts)


def scheduler_seconds(params: dict[str, float], running: np.ndarray, waiting: np.ndarray) -> np.ndarray:
    """The twin's `Calibration.scheduler_time`, vectorised (same formula, clipped at 0)."""
    return np.maximum(0.0, params["intercept"] + params["running"] * running + params["waiting"] * waiting)


# ---- step time ---------------------------------------------------------------------------------------------
def decode_design(points: pl.DataFrame) -> np.ndarray:
    """Per-step regressors of a saturated decode run: B sequences, their mean context, and the new requests
    admitted per step (each request lives ``output_tokens`` steps, so B / output requests start per step)."""
    b = points["mean_running"].to_numpy()
    inp = points["input_tokens"].to_numpy()
    out = points["output_tokens"].to_numpy()
    return np.column_stack([np.ones_like(b), b, b * (inp + out / 2.0), b * inp / out, b / out])


def prefill_design(points: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-step regressors of a prefill run (every step one token-budget chunk) and its step count."""
    tokens = points["total_input_tokens"].to_numpy().astype(float)
    reqs = points["successful_requests"].to_numpy().astype(float)
    steps = np.maximum(1.0, tokens / TOKEN_BUDGET)
    zeros = np.zeros_like(tokens)
    return np.column_stack([np.ones_like(tokens), zeros, zeros, tokens / steps, reqs / steps]), steps


def fit_step(decode: pl.DataFrame, prefill: pl.DataFrame, sched: dict[str, float]) -> Fitted:
    """Joint relative least squares of the per-step time over decode (ITL) and prefill (duration / steps) runs.

    The scheduler's share (``sched``) is subtracted first, because the twin adds `scheduler_time` to each step.
    """
    if decode.height == 0:
        raise ValueError("step fit: no default-latency decode runs for this model (data card 5.1 output/)")
    Xd = decode_design(decode)
    yd = decode["itl_mean_ms"].to_numpy() / 1000.0 - scheduler_seconds(
        sched, decode["mean_running"].to_numpy(), decode["mean_visited"].to_numpy())
    Xp, steps = prefill_design(prefill)
    yp = prefill["duration_s"].to_numpy() / steps - scheduler_seconds(
        sched, Xp[:, 4], prefill["mean_visited"].to_numpy())
    fit = fit_linear(np.vstack([Xd, Xp]), np.concatenate([yd, yp]), STEP_TERMS, relative=True)
    pts = pl.concat([
        _step_points(decode, "decode", "ITL (ms)", Xd, yd, fit, sched),
        _step_points(prefill, "prefill", "step (ms)", Xp, yp, fit, sched),
    ])
    quality = {
        "all": fit.quality,
        "decode": fit_quality(yd, fit.predict(Xd)),
        **({"prefill": fit_quality(yp, fit.predict(Xp))} if prefill.height else {}),
    }
    return Fitted({"form": "linear", "params": fit.params()}, quality, pts)


def _step_points(frame: pl.DataFrame, kind: str, target: str, X: np.ndarray, y: np.ndarray, fit: LinearFit,
                 sched: dict[str, float]) -> pl.DataFrame:
    return pl.DataFrame({
        "run_id": frame["run_id"], "kind": [kind] * frame.height, "target": [target] * frame.height,
        "mean_running": frame["mean_running"].cast(pl.Float64), "output_tokens": frame["output_tokens"],
        "input_tokens": frame["input_tokens"],
        "measured_ms": y * 1000.0, "predicted_ms": fit.predict(X) * 1000.0,
    }, schema_overrides={"output_tokens": pl.Float64, "input_tokens": pl.Float64})


def step_seconds(params: dict[str, float], X: np.ndarray) -> np.ndarray:
    """Base (no-LoRA) step time of design rows ``X`` (columns `STEP_TERMS`)."""
    return X @ np.array([params.get(k, 0.0) for k in STEP_TERMS])


# ---- LoRA overhead -----------------------------------------------------------------------------------------
#: candidate LoRA cost forms, all fitted and reported: a factor on the step time (optionally sparing the
#: attention term), the factor with a batch ramp, or an additive time per step, per decode sequence, per
#: prefill token and per distinct adapter
LORA_CANDIDATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("factor", ()), ("factor", ("context_tokens",)), ("additive", ()),
    ("factor_ramp", ()), ("factor_ramp", ("context_tokens",)),
)
#: forms the twin may use. The additive form fits the profiling runs as well as the ramp but grows without
#: bound in tokens per step, far beyond the profiled ~750; the ramp keeps the authors' multiplicative
#: extrapolation above the profiled batch. Plain factors are rejected by the batch-1 runs (+40 % error).
LORA_ALLOWED_FORMS = ("factor_ramp",)
ADDITIVE_TERMS = ("intercept", "decode_seqs", "prefill_tokens", "distinct_adapters")


def fit_lora(points: pl.DataFrame, step: dict[str, float], sched: dict[str, float]) -> Fitted:
    """LoRA cost vs the batch and its expected distinct adapters.

    Fitted on every LoRA profiling run (`adaptwin.calibration.inputs.lora_points`): batch ~210 with 1..300
    adapters, long prompts (prefill under LoRA), and single requests (batch 1, 1 adapter). A plain factor on
    the step time fits the batch-210 runs but not batch 1 (LoRA adds ~40 % there, ~100 % at batch 210), so
    the factor's excess ramps with the step's tokens (`LORA_ALLOWED_FORMS`); whether it spares attention is
    decided by the residuals. Every candidate's worst residual is in ``quality["candidates_max_abs_rel_err_pct"]``,
    the choice in ``quality["form"]`` and ``quality["lora_exempt"]``; ``initial_points_small`` (no LoRA) is a
    held-out check of the step model.
    """
    b = points["mean_running"].to_numpy()
    used = points["adapters_used"].to_numpy()
    d = np.where(used > 0, expected_distinct(np.maximum(used, 1), b), 0.0)
    X = decode_design(points)
    sched_s = scheduler_seconds(sched, b, points["mean_visited"].to_numpy())
    measured = points["itl_mean_ms"].to_numpy() / 1000.0
    train = (points["kind"] != "base").to_numpy()
    if (points["kind"] == "lora").sum() < 3:
        raise ValueError("lora fit: fewer than 3 overhead_small runs (data card 5.2)")
    best, errors = None, {}
    for form, exempt in LORA_CANDIDATES:
        fit_one = {"additive": _fit_additive, "factor": _fit_factor, "factor_ramp": _fit_factor_ramp}[form]
        block, quality, predicted, extra = fit_one(X, d, measured - sched_s, step, exempt, train,
                                                   points["kind"].to_numpy())
        err = fit_quality(measured[train], predicted[train] + sched_s[train])["max_abs_rel_err_pct"]
        errors["/".join((form, *exempt))] = err
        if form in LORA_ALLOWED_FORMS and (best is None or err < best[0] - 0.5):
            best = (err, form, exempt, block, quality, predicted + sched_s, extra)
    _, form, exempt, block, quality, predicted, extra = best
    quality.update(form=form, lora_exempt=list(exempt), candidates_max_abs_rel_err_pct=errors)
    pts = _lora_frame(points, d, extra, measured, predicted)
    for kind in ("lora", "lora_long", "lora_single", "base"):
        m = (points["kind"] == kind).to_numpy()
        if m.any():
            quality[f"itl_{kind}"] = fit_quality(measured[m], predicted[m])
    return Fitted(block, quality, pts)


def _split(X: np.ndarray, step: dict[str, float], exempt: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Step time of the terms the LoRA factor scales, and of the exempt ones."""
    mask = np.array([k in exempt for k in STEP_TERMS])
    return step_seconds(step, X * ~mask), step_seconds(step, X * mask)


def _fit_factor(X: np.ndarray, d: np.ndarray, target: np.ndarray, step: dict[str, float],
                exempt: tuple[str, ...], train: np.ndarray, kind: np.ndarray):
    """Factor f(D) on the non-exempt step terms: f = (ITL - sched - exempt part) / scaled part."""
    scaled, fixed = _split(X, step, exempt)
    factor = (target - fixed) / scaled
    curve, quality = _choose_curve(d[train], factor[train])
    fx = np.where(d > 0, np.maximum(1.0, _eval_poly(curve["params"]["coef"], d)), 1.0)
    predicted = scaled * fx + fixed
    return curve, quality, predicted, predicted - scaled - fixed


def step_tokens(X: np.ndarray) -> np.ndarray:
    """Tokens computed in a step (decode sequences + prefill tokens): what the LoRA kernels process."""
    return X[:, 1] + X[:, 3]


def _fit_factor_ramp(X: np.ndarray, d: np.ndarray, target: np.ndarray, step: dict[str, float],
                     exempt: tuple[str, ...], train: np.ndarray, kind: np.ndarray):
    """Factor f(D) fitted on the batch-210 runs, its excess over 1 ramping linearly in the step's tokens
    from the batch-1 runs' value (``ramp_start`` at 1 token) up to full at the batch-210 runs' tokens
    (``ramp_tokens``), constant beyond (`adaptwin.calibration.costs.Calibration.lora_factor`)."""
    scaled, fixed = _split(X, step, exempt)
    factor = (target - fixed) / scaled
    big = train & (kind != "lora_single")
    single = train & (kind == "lora_single")
    curve, quality = _choose_curve(d[big], factor[big])
    coef = curve["params"]["coef"]
    full = _eval_poly(coef, d)
    ramp_tokens = float(np.mean(step_tokens(X)[kind == "lora"]))
    # excess ratio r = start + (1 - start) u at the single runs' ramp position u: solve for start
    u = np.minimum(1.0, np.maximum(step_tokens(X) - 1.0, 0.0) / max(ramp_tokens - 1.0, 1e-9))
    ratio = (factor - 1) / (full - 1)
    start = float(np.clip(np.mean((ratio[single] - u[single]) / (1 - u[single])), 0, 1)) if single.any() else 1.0
    block = {"form": "factor_ramp", "params": {"coef": list(coef), "ramp_tokens": ramp_tokens,
                                               "ramp_start": start}}
    fx = np.where(d > 0, np.maximum(1.0, 1.0 + (full - 1.0) * _ramp(step_tokens(X), ramp_tokens, start)), 1.0)
    predicted = scaled * fx + fixed
    return block, quality, predicted, predicted - scaled - fixed


def _ramp(tokens: np.ndarray, ramp_tokens: float, start: float) -> np.ndarray:
    """Same rule as `adaptwin.calibration.costs.Calibration.lora_factor`."""
    return np.minimum(1.0, start + (1.0 - start) * np.maximum(tokens - 1.0, 0.0) / max(ramp_tokens - 1.0, 1e-9))


def _fit_additive(X: np.ndarray, d: np.ndarray, target: np.ndarray, step: dict[str, float],
                  exempt: tuple[str, ...], train: np.ndarray, kind: np.ndarray):
    """LoRA seconds added to a step: intercept + per decode sequence + per prefill token + per adapter."""
    base = step_seconds(step, X)
    A = np.column_stack([np.ones_like(d), X[:, 1], X[:, 3], d])
    fit = fit_linear(A[train], (target - base)[train], ADDITIVE_TERMS)
    extra = np.where(d > 0, fit.predict(A), 0.0)
    return ({"form": "additive", "params": fit.params()}, {"extra": fit.quality}, base + extra, extra)


def _eval_poly(coef: list[float], x: np.ndarray) -> np.ndarray:
    return sum(c * np.asarray(x, dtype=float) ** i for i, c in enumerate(coef))


def _choose_curve(d: np.ndarray, factor: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """Linear factor(D) unless a quadratic lowers the worst relative error by more than 1 point."""
    lin = fit_linear(np.column_stack([np.ones_like(d), d]), factor, ("c0", "c1"), nonnegative=False)
    quad = fit_linear(np.column_stack([np.ones_like(d), d, d**2]), factor, ("c0", "c1", "c2"), nonnegative=False)
    use_quad = quad.quality["max_abs_rel_err_pct"] < lin.quality["max_abs_rel_err_pct"] - 1.0
    best = quad if use_quad else lin
    quality = {"factor": best.quality, "linear_factor": lin.quality, "quadratic_factor": quad.quality,
               "chosen": "quadratic" if use_quad else "linear"}
    return {"form": "poly", "params": {"coef": list(best.coef)}}, quality


# ---- LoRA overhead under serving conditions: the slot form (the twin's) ------------------------------------
#: the step coefficients of the twin's ``slots`` LoRA form (`adaptwin.calibration.costs.Calibration.lora_extra`),
#: in the order of the `lora_design` columns; `adaptwin.calibration.lora_forms` chooses which are fitted
LORA_TERMS = ("launch", "distinct_adapters", "slots", "tokens", "slot_token", "slot_prefill_token")


def lora_design(distinct: np.ndarray, slots: np.ndarray, tokens: np.ndarray,
                prefill: np.ndarray | None = None) -> np.ndarray:
    """Columns `LORA_TERMS` for steps with ``distinct`` adapters, ``slots`` = A_max + 1, ``tokens`` computed
    and, of those, ``prefill`` prompt tokens (0 when not given)."""
    distinct, slots, tokens = (np.asarray(x, dtype=float) for x in (distinct, slots, tokens))
    prefill = np.zeros_like(tokens) if prefill is None else np.asarray(prefill, dtype=float)
    return np.column_stack([np.ones_like(distinct), distinct, slots, tokens, slots * tokens, slots * prefill])


def lora_seconds(params: dict[str, float], design: np.ndarray) -> np.ndarray:
    """LoRA seconds per step of `lora_design` rows (absent coefficients are 0, as in the twin)."""
    return design @ np.array([params.get(t, 0.0) for t in LORA_TERMS])


def table_design(points: pl.DataFrame) -> np.ndarray:
    """Base-step regressors (`STEP_TERMS` order) of `adaptwin.calibration.inputs.lora_table_points` rows."""
    b = points["mean_running"].to_numpy()
    return np.column_stack([np.ones_like(b), b, points["context_tokens"].to_numpy(),
                            points["prefill_tokens"].to_numpy(), points["prefill_seqs"].to_numpy()])


def fit_rank_tile(points: pl.DataFrame) -> Fitted:
    """Seconds each adapter in a step costs per extra rank tile of its slot (``rank_tile_adapter``), from a
    model's own single-request loading runs (5.3: batch 1, one adapter, S_max 8 / 16 / 32, ranks <= S_max).

    Why these runs: they are the only profiling runs that vary S_max with LoRA on, and at batch 1 every term
    but the kernels' is fixed. vLLM 0.8.5's LoRA kernels tile the slot rank by `RANK_TILE` (16): S_max 8 and 16
    run one tile, 32 two, and the runs show exactly that step (no change 8 -> 16, +0.16 ms at 32 for both
    models). The per-step difference is charged per distinct adapter (each adapter present runs its own
    tiles), which batch-1 runs cannot tell from a per-step cost; the serving runs at S_max 32 hold 10-60
    adapters per batch. Mean TPOT per extra tile: (mean at >= 1 extra tile - mean at none) / tiles, >= 0.
    TPOT, not the pooled ITL: at batch 1 it is the mean decode step, while the streamed gaps add chunking
    jitter as large as the effect (ITL spread within one tile 0.20-0.25 ms, TPOT 0.10-0.14 ms; leaving one
    model out, TPOT gives 0.16 ms for both models, ITL 0.23 vs 0.06 ms)."""
    from adaptwin.calibration.costs import rank_tiles

    single = points.filter(pl.col("kind") == "lora_single")
    if single.height == 0:
        return Fitted({"rank_tile_adapter": 0.0}, {"n": 0, "note": "no 5.3 runs: no rank-tile cost"}, single)
    tiles = np.array([rank_tiles(int(s)) for s in single["max_lora_rank"]])
    itl = single["tpot_mean_ms"].to_numpy() / 1000.0
    if not (tiles == 0).any() or not (tiles > 0).any():
        return Fitted({"rank_tile_adapter": 0.0}, {"n": int(single.height), "note": "one tile count only"}, single)
    base = float(itl[tiles == 0].mean())
    per_tile = float(np.mean((itl[tiles > 0] - base) / tiles[tiles > 0]))
    by_s_max = {str(int(s)): float(g["tpot_mean_ms"].mean()) for (s,), g in single.group_by("max_lora_rank")}
    quality = {"n": int(single.height), "mean_tpot_ms_by_s_max": by_s_max, "per_tile_ms": per_tile * 1000.0,
               "spread_ms_within_one_tile": float((itl[tiles == 0].max() - itl[tiles == 0].min()) * 1000.0)}
    return Fitted({"rank_tile_adapter": max(per_tile, 0.0)}, quality,
                  single.with_columns(pl.Series("extra_tiles", tiles)))


def registry_seconds(params: dict[str, float], distinct: np.ndarray, registered: np.ndarray) -> np.ndarray:
    """Seconds per step of the ``registered_adapter`` term (`adaptwin.calibration.costs.Calibration.lora_extra`):
    the LoRA worker's copy of its CPU cache, once per distinct adapter of the batch."""
    return params.get("registered_adapter", 0.0) * np.asarray(distinct, float) * np.asarray(registered, float)


def check_lora_slots(points: pl.DataFrame, step: dict[str, float], sched: dict[str, float],
                     params: dict[str, float]) -> tuple[dict[str, Any], float, pl.DataFrame]:
    """The ``slots`` form on a model's LoRA profiling runs (`adaptwin.calibration.inputs.lora_points`):
    ITL quality per kind, measured / predicted LoRA seconds summed over the ``lora`` runs, and the points."""
    b = points["mean_running"].to_numpy()
    used = points["adapters_used"].to_numpy()
    d = np.where(used > 0, expected_distinct(np.maximum(used, 1), b), 0.0)
    X = decode_design(points)
    measured = points["itl_mean_ms"].to_numpy() / 1000.0
    fixed = step_seconds(step, X) + scheduler_seconds(sched, b, points["mean_visited"].to_numpy())
    slots = points["max_loras"].fill_null(0).to_numpy().astype(float) + 1.0
    copy = registry_seconds(params, d, points["served_adapters"].fill_null(0).to_numpy())
    extra = np.where(d > 0, lora_seconds(params, lora_design(d, slots, step_tokens(X), X[:, 3])) + copy, 0.0)
    quality = {f"itl_{kind}": fit_quality(measured[m], (fixed + extra)[m])
               for kind in ("lora", "lora_long", "lora_single", "base")
               if (m := (points["kind"] == kind).to_numpy()).any()}
    lora = (points["kind"] == "lora").to_numpy()
    ratio = float((measured - fixed)[lora].sum() / extra[lora].sum()) if lora.any() else float("nan")
    return quality, ratio, _lora_frame(points, d, extra, measured, fixed + extra)


def _lora_frame(points: pl.DataFrame, distinct: np.ndarray, extra: np.ndarray, measured: np.ndarray,
                predicted: np.ndarray) -> pl.DataFrame:
    """Residual rows of the LoRA figure (same columns for profiling and table points)."""
    return points.select("run_id", "kind", "adapters_used", "mean_running", "output_tokens").with_columns(
        pl.col("adapters_used").cast(pl.Int64), pl.col("mean_running").cast(pl.Float64),
        pl.col("output_tokens").cast(pl.Float64),
        pl.Series("distinct_adapters", distinct, dtype=pl.Float64),
        pl.Series("lora_extra_ms", extra * 1000), pl.Series("measured_ms", measured * 1000),
        pl.Series("predicted_ms", predicted * 1000),
    )


# ---- KV capacity -------------------------------------------------------------------------------------------
def fit_kv(points: pl.DataFrame, max_model_len: int) -> Fitted:
    """KV tokens per (A_max, S_max): piecewise-linear per S_max + a global line; ``max_feasible`` per S_max
    = the largest measured A_max that started below the first measured failure."""
    ok = points.filter(pl.col("kv_tokens").is_not_null()).sort("max_lora_rank", "max_loras")
    if ok.height < 2:
        raise ValueError(f"kv fit: {ok.height} available-memory runs with a KV reading, need 2 (data card 5.4)")
    slots = (ok["max_loras"] * ok["max_lora_rank"]).to_numpy().astype(float)
    X = np.column_stack([np.ones_like(slots), -slots])
    line = fit_linear(X, ok["kv_tokens"].to_numpy().astype(float), ("base_tokens", "per_slot_rank_tokens"))
    curves = {
        str(s): {"max_loras": g["max_loras"].to_list(), "tokens": g["kv_tokens"].to_list()}
        for (s,), g in ok.group_by("max_lora_rank", maintain_order=True)
    }
    params = {**line.params(), "points": curves, "max_feasible": _max_feasible(points)}
    pred = np.array([_kv_predict(params, a, s) for a, s in zip(points["max_loras"], points["max_lora_rank"],
                                                                strict=True)])
    pts = points.with_columns(pl.Series("predicted_tokens", pred),
                              pl.Series("predicted_start", pred >= max_model_len))
    quality = {"line": line.quality, "piecewise": fit_quality(ok["kv_tokens"].to_numpy(),
                                                               pts.filter(pl.col("kv_tokens").is_not_null())
                                                               ["predicted_tokens"].to_numpy())}
    return Fitted({"form": "piecewise_slots", "params": params}, quality, pts)


def _kv_predict(params: dict[str, Any], max_loras: int, s_max: int) -> float:
    curve = params["points"].get(str(s_max))
    if curve is None:
        return params["base_tokens"] - params["per_slot_rank_tokens"] * max_loras * s_max
    return float(interp_extrap(max_loras, np.array(curve["max_loras"]), np.array(curve["tokens"])))


def _max_feasible(points: pl.DataFrame) -> dict[str, int]:
    out = {}
    for (s,), g in points.group_by("max_lora_rank", maintain_order=True):
        failed = g.filter(~pl.col("started"))["max_loras"]
        if failed.len():
            started = g.filter(pl.col("started") & (pl.col("max_loras") < failed.min()))["max_loras"]
            out[str(s)] = int(started.max()) if started.len() else 0
    return out


# ---- adapter loading ---------------------------------------------------------------------------------------
def fit_loading(points: pl.DataFrame) -> Fitted:
    """Mean CPU -> GPU load time (ms) per (S_max, adapter rank), the mean of the per-request loads."""
    if points.height == 0:
        raise ValueError("loading fit: no adapter-loading runs for this model (data card 5.3)")
    table: dict[str, dict[str, float]] = {}
    for row in points.iter_rows(named=True):
        table.setdefault(str(row["max_lora_rank"]), {})[str(row["adapter_rank"])] = float(row["mean_ms"])
    quality = {"n": points.height,
               "max_abs_diff_vs_authors_ms": float((points["mean_ms"] - points["authors_mean_ms"]).abs().max()),
               "mean_cv": float((points["std_ms"] / points["mean_ms"]).mean())}
    return Fitted({"form": "table", "params": table}, quality, points)


# ---- adapter swaps under serving conditions ---------------------------------------------------------------
#: candidate step costs of a CPU -> GPU swap beyond the measured copy (5.3), in ms per load: none, a constant,
#: one growing with the configured slots (A_max + 1), or both; the twin charges it with every load
SWAP_CANDIDATES: dict[str, tuple[str, ...]] = {
    "copy_only": (), "per_load": ("per_load_ms",), "per_slot": ("per_slot_ms",),
    "per_load+per_slot": ("per_load_ms", "per_slot_ms"),
}
#: the 5.5 CSV whose level differs from the other (see `adaptwin.calibration.lora_forms`): a nuisance offset
SWAP_OFFSET_SOURCE = "aggregated_rate"


def swap_design(points: pl.DataFrame, terms: tuple[str, ...]) -> np.ndarray:
    """Columns: intercept and CSV offset (nuisances the twin never sees), then ms per step of each swap term
    (loads per step, x slots for ``per_slot_ms``)."""
    loads = points["loads_per_step"].to_numpy()
    slots = points["max_loras"].to_numpy().astype(float) + 1.0
    cols = [np.ones_like(loads), (points["source"] == SWAP_OFFSET_SOURCE).cast(pl.Float64).to_numpy()]
    cols += [loads * (slots if t == "per_slot_ms" else 1.0) for t in terms]
    return np.column_stack(cols)


def _fit_swap_terms(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with free nuisances (first two columns) and non-negative swap costs."""
    lower = np.r_[-np.inf, -np.inf, np.zeros(X.shape[1] - 2)]
    return lsq_linear(X, y, bounds=(lower, np.inf), method="bvls").x


def twin_distinct(points: pl.DataFrame) -> np.ndarray:
    """Distinct adapters per step the twin forms from a row's mean batch over its served adapters (each
    request's adapter uniform over them, at most A_max): the count its LoRA cost will be charged at."""
    expected = expected_distinct(points["served"].to_numpy(), points["mean_running"].to_numpy())
    return np.minimum(expected, points["max_loras"].to_numpy())


def swap_residual_ms(points: pl.DataFrame, step: dict[str, float], sched: dict[str, float],
                     lora: dict[str, float], copy_ms: float, distinct: np.ndarray) -> np.ndarray:
    """Measured mean step time of `adaptwin.calibration.inputs.swap_table_points` rows minus what the twin
    charges there without a swap term: base step, scheduler, LoRA (at ``distinct`` adapters, with the
    registry copy of the row's ``cpu_loras``) and the measured copy of each load (``copy_ms``), in ms."""
    X = table_design(points)
    b = points["mean_running"].to_numpy()
    slots = points["max_loras"].to_numpy().astype(float) + 1.0
    lora_s = (lora_seconds(lora, lora_design(distinct, slots, step_tokens(X), X[:, 3]))
              + registry_seconds(lora, distinct, points["served"].to_numpy()))
    fixed = step_seconds(step, X) + scheduler_seconds(sched, b, points["mean_visited"].to_numpy()) + lora_s
    return (points["step_s"].to_numpy() - fixed) * 1000.0 - points["loads_per_step"].to_numpy() * copy_ms


def swap_candidates(points: pl.DataFrame, y: np.ndarray) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
    """Coefficients and in-sample / leave-one-A_max-out mean |error| (ms per step) of every candidate."""
    max_loras = points["max_loras"].to_numpy()
    scores, coefs = {}, {}
    for name, terms in SWAP_CANDIDATES.items():
        X = swap_design(points, terms)
        coefs[name] = {k: float(v) for k, v in zip(terms, _fit_swap_terms(X, y)[2:], strict=True)}
        held = [np.abs(X[max_loras == v] @ _fit_swap_terms(X[max_loras != v], y[max_loras != v]) - y[max_loras == v])
                for v in np.unique(max_loras)]
        scores[name] = {"in_sample_mae_ms": float(np.abs(X @ _fit_swap_terms(X, y) - y).mean()),
                        "leave_one_a_max_out_mae_ms": float(np.concatenate(held).mean()), **coefs[name]}
    return coefs, scores


def fit_swap(points: pl.DataFrame, step: dict[str, float], sched: dict[str, float], lora: dict[str, float],
             copy_ms: float) -> Fitted:
    """Step cost of a swap beyond the copy, chosen among `SWAP_CANDIDATES` by leave-one-A_max-out error.

    Each candidate is fitted on every busy no-queue 5.5 row (swapping or not, so the nuisance level is
    shared) and scored on the rows of each A_max left out in turn; the lowest held-out mean |error| wins.
    The residual charges LoRA at the distinct adapters the twin forms (`twin_distinct`): the tables'
    measured ``mean_loras_by_batch`` is ~7 % below that, so residuals at the measured count leave a
    LoRA cost the twin already charges to the swap term (it then picks ``per_slot`` at ~0.18 ms per
    slot, which overshoots the same rows re-simulated at A_max >= 128: tools/experiments/table_swaps.py).
    Those scores are kept in ``quality["with_measured_distinct"]``."""
    y = swap_residual_ms(points, step, sched, lora, copy_ms, twin_distinct(points))
    coefs, scores = swap_candidates(points, y)
    measured = swap_residual_ms(points, step, sched, lora, copy_ms, points["distinct_adapters"].to_numpy())
    best = min(scores, key=lambda n: scores[n]["leave_one_a_max_out_mae_ms"])
    params = {"per_load_ms": 0.0, "per_slot_ms": 0.0, **coefs[best]}
    swaps = (points["served"] > points["max_loras"]).to_numpy()
    quality = {"chosen": best, "candidates": scores, "n": points.height, "n_swapping": int(swaps.sum()),
               "copy_ms": copy_ms, "with_measured_distinct": swap_candidates(points, measured)[1]}
    pts = points.with_columns(pl.Series("residual_ms", y))
    return Fitted({"form": "per_load_slots", "params": params}, quality, pts)


# ---- the API server's /metrics renders ----------------------------------------------------------------------
def fit_scrape(points: pl.DataFrame, per_series_s: float, per_entry_s: float) -> Fitted:
    """Seconds one /metrics render holds the API server (`adaptwin.twin.frontend`): ``base_s`` is the median
    poll time of the base-model profiling runs (no LoRA label series; the median, since a poll that meets a
    busy start-up is seconds long), ``per_series_s`` and ``per_entry_s`` the measured costs of each LoRA label
    series and of each adapter name in them (params.yaml ``calibration``)."""
    if points.height == 0:
        raise ValueError("frontend fit: no polls of base-model profiling runs for this model (data card 5.1)")
    scrape = points["scrape_s"]
    base = float(scrape.median())
    quality = {"n": points.height, "runs": points["run_id"].n_unique(), "base_s": base,
               "p25_s": float(scrape.quantile(0.25)), "p75_s": float(scrape.quantile(0.75))}
    params = {"base_s": base, "per_series_s": float(per_series_s), "per_entry_s": float(per_entry_s)}
    return Fitted({"form": "metrics_scrape", "params": params}, quality, points)
