"""The feature vector of one GPU, the same for training, evaluation and placement.

`gpu_features(ranks, rates, max_loras)` is the one definition. The paper's seven features (exact names, a
contract: the surrogates are also scored on frames that hold only these):

* ``sum_rate``, ``std_rate``: total and spread (population std) of the per-adapter request rates, req/s;
* ``max_size``, ``mean_size``, ``std_size``: largest, mean and spread of the adapter ranks ("sizes");
* ``served_adapters``: adapters held by the server (``--max-cpu-loras``);
* ``adapter_slots``: GPU adapter slots A_max (``--max-loras``).

Extras, each a function of those seven only (so a frame with the paper's columns is enough to predict), chosen
because trees split on one variable at a time and cannot form ratios or the memory model themselves:

* ``mean_rate`` = sum_rate / served_adapters: per-adapter load, which decides how often an adapter that lost
  its slot comes back (starvation through vLLM's LoRA admission rule);
* ``rate_per_slot`` = sum_rate / adapter_slots: load each slot must carry;
* ``slot_fraction`` = adapter_slots / served_adapters: share of adapters resident at once (1 = no swapping);
* ``kv_capacity_tokens`` (only with a calibration): KV-cache tokens left by A_max slots of rank S_max =
  max_size, from `Calibration.kv_capacity_tokens`: it bounds the running batch and so the throughput.
* ``capacity_rate`` and ``load_ratio`` (only with a calibration): the requests/s a full batch of the GPU
  sustains at the calibrated step time (`Calibration.capacity_rate`, the proxy that centres the
  dataset's offered loads) and sum_rate / capacity_rate. Starvation sets in near a fixed load ratio, which a
  tree finds in one split; from the raw columns it would need the step-time model.
* physics of adapter slots (only with a calibration; `PHYSICS_FEATURES`), from a gamma law with the rates'
  mean and spread (the seven columns hold no more of the popularity law than those two moments):
  ``rate_cv2`` (squared coefficient of variation), ``effective_adapters`` = served / (1 + cv^2) (the inverse
  Simpson index: how many equally busy adapters carry the same load), ``batch_demand`` = min(load_ratio, 1) x
  the full batch (requests in flight at this load, Little's law at the calibrated step time),
  ``distinct_demand`` / ``distinct_full``: expected distinct adapters among those requests and among a full
  batch, ``slot_pressure`` / ``slot_pressure_full``: those over A_max (above 1 adapters queue for a slot, the
  cause of starvation under vLLM's LoRA admission rule), ``resident_share``: share of the load carried by the
  A_max busiest adapters, ``hot_rate_ratio``: the busiest adapter's rate over the mean (these two from a
  lognormal law with the same moments: closed-form tails).
* ``window_s`` (only in a surrogate trained on rows of more than one simulated window): the window the twin
  simulated. Short windows are several times cheaper per scenario (a starved GPU's backlog makes each later
  simulated second dearer), but they bias the targets (requests still running at the end are dropped, a
  backlog is younger); trained on both, a tree learns that bias from this column, and every prediction is
  made at the longest window trained on (the surrogate's ``predict_window_s``; the real runs' hour in the
  default profile). The paper's seven columns are still enough to predict.
* ``bursty_arrivals`` (only in a surrogate trained on both arrival kinds): 1 for the twin's ``unpredictable``
  arrivals (rates that drift by x1.5 steps every 300 s: their realised load runs about 20 % above the nominal
  rates), 0 for Poisson. Without it a tree averages the two populations and misses both. Absent from a frame
  it is 0: placement, the real runs and `adaptwin place` all ask about Poisson arrivals.

``window_s`` and ``bursty_arrivals`` are *context* columns: a frame given to `feature_matrix` may carry them
(the twin's own rows do); otherwise they take their defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import polars as pl

PAPER_FEATURES: tuple[str, ...] = (
    "sum_rate", "std_rate", "max_size", "mean_size", "std_size", "served_adapters", "adapter_slots",
)
RATIO_FEATURES: tuple[str, ...] = ("mean_rate", "rate_per_slot", "slot_fraction")
KV_FEATURE = "kv_capacity_tokens"
CAPACITY_FEATURES: tuple[str, ...] = ("capacity_rate", "load_ratio")
PHYSICS_FEATURES: tuple[str, ...] = (
    "rate_cv2", "effective_adapters", "batch_demand", "distinct_demand", "distinct_full", "slot_pressure",
    "slot_pressure_full", "resident_share", "hot_rate_ratio",
)
WINDOW_FEATURE = "window_s"
BURSTY_FEATURE = "bursty_arrivals"
#: the twin's arrival kind that `BURSTY_FEATURE` marks
BURSTY_KIND = "unpredictable"
#: the window predictions are made for unless a surrogate says otherwise: the real serving runs' hour
REFERENCE_WINDOW_S = 3600.0
#: bounds of the squared coefficient of variation of the rates (gamma shape 1/cv^2 stays computable)
_CV2_RANGE = (1e-4, 1e4)
_NORMAL = NormalDist()
#: paper columns that must be > 0 (served_adapters, adapter_slots, max_size)
_POSITIVE = [5, 6, 2]


class FeatureError(ValueError):
    """Inputs a feature vector cannot be built from, naming the field and value."""


def feature_names(with_calibration: bool, physics: bool = True, window: bool = False,
                  bursty: bool = False) -> tuple[str, ...]:
    """Column order of the feature matrix (the models are trained on exactly this order); ``physics`` adds
    `PHYSICS_FEATURES` (with a calibration only), ``bursty`` the arrival kind (`BURSTY_FEATURE`) and
    ``window`` the simulated window (`WINDOW_FEATURE`, last)."""
    last = ((BURSTY_FEATURE,) if bursty else ()) + ((WINDOW_FEATURE,) if window else ())
    if not with_calibration:
        return PAPER_FEATURES + RATIO_FEATURES + last
    return (PAPER_FEATURES + RATIO_FEATURES + (KV_FEATURE, *CAPACITY_FEATURES) + (PHYSICS_FEATURES if physics else ())
            + last)


def _moments(values: np.ndarray, weights: np.ndarray | None) -> tuple[float, float]:
    """Weighted mean and population std; ``weights`` None = all ones, without multiplying by them (x * 1.0
    is x, and a sum of ones is exact: the same numbers, a third fewer array operations for placement)."""
    if weights is None:
        total = float(len(values))
        mean = float(values.sum() / total)
        return mean, float(np.sqrt(max(((values - mean) ** 2).sum() / total, 0.0)))
    total = weights.sum()
    mean = float((values * weights).sum() / total)
    return mean, float(np.sqrt(max((weights * (values - mean) ** 2).sum() / total, 0.0)))


def gpu_features(ranks: Sequence[int] | np.ndarray, rates: Sequence[float] | np.ndarray, max_loras: int, *,
                 counts: Sequence[int] | np.ndarray | None = None, calibration: Any = None) -> dict[str, float]:
    """The feature vector of one GPU serving adapters of ``ranks`` at ``rates`` (req/s) with ``max_loras``
    slots. ``counts`` (optional) repeats entry i ``counts[i]`` times (adapter groups of a scenario)."""
    ranks_a = np.asarray(ranks, dtype=float)
    rates_a = np.asarray(rates, dtype=float)
    weights = None if counts is None else np.asarray(counts, dtype=float)
    n_weights = len(ranks_a) if weights is None else len(weights)
    if not len(ranks_a) == len(rates_a) == n_weights:
        raise FeatureError(f"ranks/rates/counts: lengths {len(ranks_a)}/{len(rates_a)}/{n_weights} differ")
    if len(ranks_a) == 0 or (weights is not None and weights.sum() <= 0):
        raise FeatureError("ranks: no adapters on this GPU")
    if (rates_a < 0).any() or not np.isfinite(rates_a).all():
        raise FeatureError(f"rates: negative or non-finite value {rates_a[(rates_a < 0) | ~np.isfinite(rates_a)][0]!r}")
    if (ranks_a <= 0).any():
        raise FeatureError(f"ranks: non-positive rank {ranks_a[ranks_a <= 0][0]!r}")
    if max_loras < 1:
        raise FeatureError(f"max_loras: expected >= 1, got {max_loras!r}")
    mean_rate, std_rate = _moments(rates_a, weights)
    mean_size, std_size = _moments(ranks_a, weights)
    served = float(len(ranks_a)) if weights is None else float(weights.sum())
    base = {
        "sum_rate": mean_rate * served, "std_rate": std_rate, "max_size": float((ranks_a if weights is None else ranks_a[weights > 0]).max()),
        "mean_size": mean_size, "std_size": std_size, "served_adapters": served, "adapter_slots": float(max_loras),
    }
    return {**base, **derived_row(tuple(base.values()), calibration)}


def derived_features(base: Mapping[str, Any], calibration: Any = None) -> dict[str, Any]:
    """The extra features from the paper's seven (scalars or numpy arrays alike)."""
    sum_rate = np.asarray(base["sum_rate"], dtype=float)
    served = np.asarray(base["served_adapters"], dtype=float)
    slots = np.asarray(base["adapter_slots"], dtype=float)
    out: dict[str, Any] = {
        "mean_rate": sum_rate / served,
        "rate_per_slot": sum_rate / slots,
        "slot_fraction": slots / served,
    }
    if calibration is not None:
        s_max = np.asarray(base["max_size"], dtype=float)
        out[KV_FEATURE] = kv_capacity(calibration, slots, s_max)
        out["capacity_rate"] = capacity(calibration, slots, s_max, served)
        out["load_ratio"] = sum_rate / out["capacity_rate"]
        out.update(slot_physics(base, out[KV_FEATURE], out["load_ratio"]))
    return out


def derived_row(values: Sequence[float], calibration: Any = None) -> dict[str, float]:
    """`derived_features` of one GPU (its paper's seven values as floats, `PAPER_FEATURES` order) with plain
    floats: the same IEEE operations in the same order, so the same numbers, without numpy's per-call cost on
    one-element arrays (placement asks about one GPU at a time)."""
    sum_rate, std_rate, s_max, _, _, served, slots = values
    out = {"mean_rate": sum_rate / served, "rate_per_slot": sum_rate / slots, "slot_fraction": slots / served}
    if calibration is None:
        return out
    kv, cap = _row_constants(calibration, int(slots), int(s_max), int(served))
    if cap == 0:  # numpy's inf (and its warning) rather than a ZeroDivisionError
        return {k: float(v) for k, v in derived_features(dict(zip(PAPER_FEATURES, values, strict=True)), calibration).items()}
    load = sum_rate / cap
    out.update({KV_FEATURE: kv, "capacity_rate": cap, "load_ratio": load})
    out.update(zip(PHYSICS_FEATURES, _physics_row(served, slots, sum_rate, std_rate, kv, load), strict=True))
    return out


def feature_row(values: Sequence[float], names: Sequence[str], calibration: Any = None,
                source: str = "features", window_s: float = REFERENCE_WINDOW_S) -> list[float]:
    """`matrix_from_paper` of one GPU as a list of floats in ``names`` order (``values``: its paper's seven,
    finite, counts and ranks positive: `paper_row`)."""
    cols = {**dict(zip(PAPER_FEATURES, values, strict=True)), **derived_row(values, calibration),
            WINDOW_FEATURE: window_s, BURSTY_FEATURE: 0.0}
    unknown = [n for n in names if n not in cols]
    if unknown:
        raise FeatureError(f"{source}: feature(s) {unknown} need a calibration (none given)")
    return [cols[n] for n in names]


def expected_distinct(batch: np.ndarray, served: np.ndarray, cv2: np.ndarray) -> np.ndarray:
    """Expected distinct adapters among ``batch`` requests when the adapters' shares of the traffic follow a
    gamma law of mean 1/served and squared variation ``cv2``: served x (1 - (1 + batch cv2 / served)^(-1/cv2))
    (Poisson thinning of each adapter, averaged over the law; equal rates give served x (1 - e^(-batch/served)))."""
    return served * -np.expm1(-np.log1p(batch * cv2 / served) / cv2)


def top_share(fraction: np.ndarray, cv2: np.ndarray) -> np.ndarray:
    """Share of the total rate carried by the busiest ``fraction`` of adapters when the rates follow a lognormal
    law of squared variation ``cv2`` (sigma^2 = log(1 + cv2)): Phi(sigma - Phi^-1(1 - fraction)), 1 for a
    fraction of 1 or more. Lognormal rather than gamma here: its tail has this closed form, cheap enough for
    placement's inner loop (a gamma's needs an iterative inverse)."""
    from scipy.special import ndtr, ndtri

    sigma = np.sqrt(np.log1p(cv2))
    f = np.clip(fraction, 0.0, 1.0)
    return np.where(f >= 1.0, 1.0, ndtr(sigma - ndtri(1.0 - f)))


def hot_ratio(served: np.ndarray, cv2: np.ndarray) -> np.ndarray:
    """The busiest adapter's rate over the mean rate: the lognormal law's (1 - 1/(2 served)) quantile."""
    from scipy.special import ndtri

    sigma2 = np.log1p(cv2)
    return np.exp(np.sqrt(sigma2) * ndtri(1.0 - 0.5 / served) - sigma2 / 2)


def slot_physics(base: Mapping[str, Any], kv_tokens: np.ndarray, load_ratio: np.ndarray) -> dict[str, Any]:
    """`PHYSICS_FEATURES` from the paper's seven, the KV capacity and the load ratio (see the module docstring)."""
    from adaptwin.calibration.costs import PROXY_TOKENS_PER_REQUEST
    from adaptwin.twin.scenario import MAX_NUM_SEQS

    served = np.asarray(base["served_adapters"], dtype=float)
    if served.size <= 16:  # placement's single GPU: plain floats are ~5x cheaper than numpy on tiny arrays
        return _physics_rows(base, kv_tokens, load_ratio, served.shape)
    slots = np.asarray(base["adapter_slots"], dtype=float)
    mean = np.asarray(base["sum_rate"], dtype=float) / served
    std = np.asarray(base["std_rate"], dtype=float)
    cv2 = np.clip(np.divide(std**2, mean**2, out=np.zeros_like(mean), where=mean > 0), *_CV2_RANGE)
    full = np.clip(np.asarray(kv_tokens, dtype=float) / PROXY_TOKENS_PER_REQUEST, 1.0, MAX_NUM_SEQS)
    demand = np.clip(np.asarray(load_ratio, dtype=float), 0.0, 1.0) * full
    distinct_demand = expected_distinct(demand, served, cv2)
    distinct_full = expected_distinct(full, served, cv2)
    return {
        "rate_cv2": cv2, "effective_adapters": served / (1.0 + cv2), "batch_demand": demand,
        "distinct_demand": distinct_demand, "distinct_full": distinct_full,
        "slot_pressure": distinct_demand / slots, "slot_pressure_full": distinct_full / slots,
        "resident_share": top_share(slots / served, cv2), "hot_rate_ratio": hot_ratio(served, cv2),
    }


def _physics_row(served: float, slots: float, sum_rate: float, std: float, kv: float, load: float) -> tuple:
    """`slot_physics` of one GPU with floats (same formulas, `PHYSICS_FEATURES` order)."""
    from adaptwin.calibration.costs import PROXY_TOKENS_PER_REQUEST
    from adaptwin.twin.scenario import MAX_NUM_SEQS

    mean = sum_rate / served
    cv2 = min(max(std * std / (mean * mean) if mean > 0 else 0.0, _CV2_RANGE[0]), _CV2_RANGE[1])
    full = min(max(kv / PROXY_TOKENS_PER_REQUEST, 1.0), MAX_NUM_SEQS)
    demand = min(max(load, 0.0), 1.0) * full
    d_demand = served * -math.expm1(-math.log1p(demand * cv2 / served) / cv2)
    d_full = served * -math.expm1(-math.log1p(full * cv2 / served) / cv2)
    sigma2 = math.log1p(cv2)
    sigma = math.sqrt(sigma2)
    f = min(max(slots / served, 0.0), 1.0)
    resident = 1.0 if f >= 1.0 else 0.5 * math.erfc(-(sigma - _NORMAL.inv_cdf(1.0 - f)) / math.sqrt(2.0))
    hot = math.exp(sigma * _NORMAL.inv_cdf(1.0 - 0.5 / served) - sigma2 / 2)
    return (cv2, served / (1.0 + cv2), demand, d_demand, d_full, d_demand / slots, d_full / slots, resident, hot)


def _physics_rows(base: Mapping[str, Any], kv_tokens: Any, load_ratio: Any, shape: tuple) -> dict[str, Any]:
    """`slot_physics` row by row with floats (see `_physics_row`)."""
    columns = [np.asarray(base[k], dtype=float).ravel().tolist()
               for k in ("served_adapters", "adapter_slots", "sum_rate", "std_rate")]
    columns += [np.asarray(kv_tokens, dtype=float).ravel().tolist(), np.asarray(load_ratio, dtype=float).ravel().tolist()]
    rows = [_physics_row(*args) for args in zip(*columns, strict=True)]
    return {name: np.array([r[i] for r in rows], dtype=float).reshape(shape) for i, name in enumerate(PHYSICS_FEATURES)}


#: id(calibration) -> (calibration, {name: {configuration: value}}): constants of one calibration; the calibration
#: is held so its id cannot be reused while cached (a Calibration holds dicts, so it cannot key a dict itself)
_CALIBRATION_CACHE: dict[int, tuple[Any, dict[str, dict[tuple, Any]]]] = {}


def _constants(calibration: Any) -> dict[str, dict[tuple, Any]]:
    """The memos of ``calibration``, by name."""
    entry = _CALIBRATION_CACHE.get(id(calibration))
    if entry is None or entry[0] is not calibration:
        entry = _CALIBRATION_CACHE[id(calibration)] = (calibration, {})
    return entry[1]


def _memoised(calibration: Any, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(*key)`` memoised per calibration under ``name`` (placement and large batches ask about the same
    configurations thousands of times; a capacity_rate costs ~15 us, a look-up well under 1 us)."""
    memo = _constants(calibration).setdefault(name, {})

    def lookup(*key: int) -> Any:
        value = memo.get(key)
        if value is None:
            value = memo[key] = fn(*key)
        return value

    return lookup


def _row_constants(calibration: Any, max_loras: int, s_max: int, served: int) -> tuple[float, float]:
    """(``kv_capacity_tokens`` as a float, ``capacity_rate``) of one configuration, memoised together: one
    look-up per GPU on placement's path."""
    memo = _constants(calibration).setdefault("row", {})
    key = (max_loras, s_max, served)
    value = memo.get(key)
    if value is None:
        value = memo[key] = (float(_memoised(calibration, "kv", calibration.kv_capacity_tokens)(max_loras, s_max)),
                             _capacity_lookup(calibration)(max_loras, s_max, served))
    return value


def _capacity_lookup(calibration: Any) -> Callable[[int, int, int], float]:
    """Memoised `Calibration.capacity_rate` of ``calibration`` at the real runs' server settings."""
    from adaptwin.twin.scenario import MAX_NUM_SEQS

    return _memoised(calibration, "capacity",
                     lambda a, r, n: calibration.capacity_rate(a, r, n, max_num_seqs=MAX_NUM_SEQS))


def capacity(calibration: Any, slots: np.ndarray, s_max: np.ndarray, served: np.ndarray) -> np.ndarray:
    """`Calibration.capacity_rate` over arrays (once per distinct (A_max, S_max, served))."""
    return _per_distinct(_capacity_lookup(calibration), slots, s_max, served)


def kv_capacity(calibration: Any, slots: np.ndarray, s_max: np.ndarray) -> np.ndarray:
    """`Calibration.kv_capacity_tokens` over arrays (once per distinct (A_max, S_max) pair when many rows)."""
    return _per_distinct(_memoised(calibration, "kv", calibration.kv_capacity_tokens), slots, s_max)


def _per_distinct(fn: Any, *columns: np.ndarray) -> np.ndarray:
    """``fn`` of integer arguments over arrays: a plain loop for placement's few rows, else once per distinct
    argument tuple (training frames repeat a handful of configurations thousands of times)."""
    cols = [np.asarray(c, dtype=float) for c in columns]
    if cols[0].size <= 16:  # placement's single GPU: a plain loop beats np.unique by far
        flat = [fn(*(int(v) for v in args)) for args in zip(*(c.flat for c in cols), strict=True)]
        return np.array(flat, dtype=float).reshape(cols[0].shape)
    stacked = np.stack([c.ravel() for c in cols], axis=1)
    distinct = _distinct_int_rows(stacked)
    if distinct is None:
        keys, inverse = np.unique(stacked, axis=0, return_inverse=True)
        values = np.array([fn(*(int(v) for v in k)) for k in keys], dtype=float)
    else:
        keys, inverse = distinct
        values = np.array([fn(*k) for k in keys.tolist()], dtype=float)
    return values[inverse.ravel()].reshape(cols[0].shape)


def _distinct_int_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(distinct rows of ``values`` truncated to integers, as `int` does; index of each row's one), by a
    one-dimensional unique of mixed-radix keys: ~10x cheaper than ``np.unique(axis=0)``, which sorts rows
    field by field. None when a value is negative, non-finite or too large for the keys."""
    if not (np.isfinite(values).all() and values.min(initial=0.0) >= 0 and values.max(initial=0.0) < 2.0**31):
        return None
    ints = values.astype(np.int64)
    radix = ints.max(axis=0) + 1
    if float(np.prod(radix.astype(float))) >= 2.0**62:
        return None
    key = ints[:, 0].copy()
    for j in range(1, ints.shape[1]):
        key = key * radix[j] + ints[:, j]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return ints[first], inverse


def paper_matrix(frame: pl.DataFrame, source: str = "features frame") -> np.ndarray:
    """The paper's seven columns as a (rows, 7) float matrix; raises naming the missing column, or the first row
    with a non-positive / non-finite served count, slot count or rank."""
    missing = [c for c in PAPER_FEATURES if c not in frame.columns]
    if missing:
        raise FeatureError(f"{source}: missing feature column(s) {missing}; expected {list(PAPER_FEATURES)}")
    if frame.height <= 16:  # small frames: row tuples are much cheaper than column conversions
        columns = frame.columns
        where = [columns.index(c) for c in PAPER_FEATURES]
        values = np.array([[r[i] for i in where] for r in frame.rows()], dtype=float).reshape(-1, len(where))
    else:
        values = np.column_stack([frame.get_column(c).to_numpy().astype(float) for c in PAPER_FEATURES])
    return check_paper_values(values, source)


def check_paper_values(values: np.ndarray, source: str = "features") -> np.ndarray:
    """``values`` (rows, 7 paper features) if finite with positive counts and ranks, else raise naming the
    row, the field and the value."""
    if not (values[:, _POSITIVE] > 0).all() or not np.isfinite(values).all():  # NaN fails both tests
        bad = ~np.isfinite(values) | np.isin(np.arange(values.shape[1]), _POSITIVE) & ~(values > 0)
        row, col = np.argwhere(bad)[0]
        raise FeatureError(f"{source}: row {row}, field {PAPER_FEATURES[col]!r}: value {float(values[row, col])!r} "
                           "(expected finite, and > 0 for counts and ranks)")
    return values


def matrix_from_paper(values: np.ndarray, names: Sequence[str], calibration: Any = None,
                      source: str = "features", window_s: float = REFERENCE_WINDOW_S) -> np.ndarray:
    """(rows, 7 paper features) -> (rows, ``names``) with the extras computed by `derived_features` (and the
    window predicted for, ``window_s``, if ``names`` holds `WINDOW_FEATURE`)."""
    base = {c: values[:, i] for i, c in enumerate(PAPER_FEATURES)}
    cols = {**base, **derived_features(base, calibration)}
    if WINDOW_FEATURE in names:
        cols[WINDOW_FEATURE] = np.full(values.shape[0], float(window_s))
    if BURSTY_FEATURE in names:
        cols[BURSTY_FEATURE] = np.zeros(values.shape[0])
    unknown = [n for n in names if n not in cols]
    if unknown:
        raise FeatureError(f"{source}: feature(s) {unknown} need a calibration (none given)")
    return np.column_stack([cols[n] for n in names])


def paper_row(frame: pl.DataFrame) -> tuple[float, ...] | None:
    """The paper's seven values of a one-row frame as floats if present, finite and positive where required,
    else None (the caller then takes `paper_matrix`, which names what is wrong): the one-GPU path without
    numpy conversions."""
    try:
        columns = frame.columns
        row = frame.row(0)
        return checked_row([row[columns.index(c)] for c in PAPER_FEATURES])
    except ValueError:  # a missing column
        return None


def checked_row(values: Sequence[Any]) -> tuple[float, ...] | None:
    """``values`` (the paper's seven of one GPU) as floats if finite and positive where `check_paper_values`
    requires it, else None (nulls and non-numbers too: the caller's general path raises, naming the field)."""
    try:
        row = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in row) or min(row[i] for i in _POSITIVE) <= 0:
        return None
    return row


def feature_matrix(frame: pl.DataFrame, names: Sequence[str], calibration: Any = None,
                   source: str = "features frame", window_s: float = REFERENCE_WINDOW_S) -> np.ndarray:
    """The (rows, features) float64 matrix in ``names`` order, extras recomputed from the paper's seven, context
    columns (`CONTEXT_FEATURES`) taken from ``frame`` where it has them, else their defaults."""
    x = matrix_from_paper(paper_matrix(frame, source), names, calibration, source, window_s)
    for name in context_columns(frame, names):
        x[:, list(names).index(name)] = frame[name].cast(pl.Float64).to_numpy()
    return x


#: feature columns that are not functions of the paper's seven: inputs of the scenario a frame may carry
CONTEXT_FEATURES: tuple[str, ...] = (WINDOW_FEATURE, BURSTY_FEATURE)


def context_columns(frame: pl.DataFrame, names: Sequence[str]) -> list[str]:
    """The context features of ``names`` that ``frame`` carries itself."""
    return [c for c in CONTEXT_FEATURES if c in names and c in frame.columns]


def features_frame(dataset: pl.DataFrame, calibration: Any = None, window: bool = False,
                   bursty: bool = False) -> pl.DataFrame:
    """Feature columns for every row of a sweep dataset (groups in ``group_counts/ranks/rates``), via
    `gpu_features` row by row so there is one definition of every feature; ``window`` adds each row's own
    simulated window (``duration_s``) as `WINDOW_FEATURE`, ``bursty`` its arrival kind as `BURSTY_FEATURE`."""
    rows = [
        gpu_features(ranks, rates, max_loras, counts=counts, calibration=calibration)
        for counts, ranks, rates, max_loras in zip(dataset["group_counts"].to_list(), dataset["group_ranks"].to_list(),
                                               dataset["group_rates"].to_list(), dataset["max_loras"].to_list(),
                                               strict=True)
    ]
    frame = pl.DataFrame(rows, schema=dict.fromkeys(feature_names(calibration is not None), pl.Float64))
    if bursty:
        kinds = dataset["arrivals"] if "arrivals" in dataset.columns else pl.Series([None] * dataset.height, dtype=pl.String)
        frame = frame.with_columns((kinds == BURSTY_KIND).fill_null(False).cast(pl.Float64).alias(BURSTY_FEATURE))
    if window:
        frame = frame.with_columns(dataset["duration_s"].cast(pl.Float64).alias(WINDOW_FEATURE))
    return frame


def real_run_features(runs: pl.DataFrame, calibration: Any = None) -> pl.DataFrame:
    """Feature columns of real serving runs: the served adapters cycle through ``adapter_ranks`` (as the fork's
    ``--dummy-lora-modules`` does) and take the rates ``adapter_rates`` with ``adapter_rate_counts`` adapters
    each (the mapping of rank to rate was not logged; the features need only the marginals)."""
    rows = []
    for run in runs.iter_rows(named=True):
        served = int(run["served_adapters"])
        cycle = run["adapter_ranks"] or []
        values, counts = run["adapter_rates"] or [], run["adapter_rate_counts"] or []
        if not cycle or not values or len(values) != len(counts) or sum(counts) != served:
            raise FeatureError(f"runs.parquet: run {run['run_id']!r}: adapter_ranks {cycle!r} / adapter_rates "
                               f"{values!r} x counts {counts!r} do not describe {served} served adapters")
        ranks = [cycle[i % len(cycle)] for i in range(served)]
        rates = np.repeat(np.asarray(values, dtype=float), np.asarray(counts, dtype=int))
        rows.append(gpu_features(ranks, rates, int(run["max_loras"]), calibration=calibration))
    return pl.DataFrame(rows, schema=dict.fromkeys(feature_names(calibration is not None), pl.Float64))
