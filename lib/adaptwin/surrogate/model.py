"""A trained surrogate set of one base model: load it and predict throughput, ITL, TTFT and starvation.

Files under ``data/models/<model>/``: one CatBoost ``<target>.cbm`` per target and ``metadata.json``
(``version``, ``feature_names``, per-target ``transform`` and tuned params, ``tokens_per_request``, the
calibration the kv feature was computed with, metrics). `load(model)` returns a `Surrogate`.

Speed matters (placement asks thousands of times per second). CatBoost's own ``predict`` costs about 0.4 ms
per call whatever the batch size, times four models, so small batches go through `ObliviousEnsemble`, a
NumPy evaluation of the same oblivious trees (all four models' trees in one pass: float32 border tests,
leaf index, gather, sum); large batches go through CatBoost's C++ evaluator (one Pool for the four models).
Both give the same numbers (tests compare them). A one-row frame (placement's usual question) skips the
DataFrame-to-matrix conversion and computes its features with plain floats (`predict_row`): numpy costs
microseconds per call on one-element arrays, and there are dozens of such calls per feature vector; the
numbers are the very ones of the general path (a test compares them bit for bit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adaptwin.errors import InputError
from adaptwin.surrogate.features import (
    PAPER_FEATURES,
    REFERENCE_WINDOW_S,
    FeatureError,
    check_paper_values,
    checked_row,
    context_columns,
    feature_matrix,
    feature_row,
    gpu_features,
    matrix_from_paper,
    paper_row,
)

SURROGATE_VERSION = 1
REGRESSION_TARGETS: tuple[str, ...] = ("total_throughput", "itl_mean_ms", "ttft_mean_ms")
CLASS_TARGET = "starved"
OUTPUT_COLUMNS: tuple[str, ...] = (*REGRESSION_TARGETS, "starvation_probability", "starved")
_OUTPUT_SCHEMA = {**dict.fromkeys(OUTPUT_COLUMNS[:-1], pl.Float64), "starved": pl.Boolean}
#: batches up to this many rows use the NumPy evaluator, larger ones CatBoost's C++ one (measured crossover)
SMALL_BATCH = 64
#: frames of at most this many rows are built from Python rows (polars does that ~4x faster for tiny frames);
#: a polars cost, tuned apart from `SMALL_BATCH`
ROW_FRAME_MAX = 64


class SurrogateError(InputError):
    """A model directory that cannot be used, naming the file and field."""


@dataclass(frozen=True)
class ObliviousEnsemble:
    """Several CatBoost oblivious-tree models evaluated together with NumPy, in one pass.

    Every tree is padded to the deepest tree's depth with never-taken splits (border +inf), so the whole
    ensemble is four arrays: ``feature``/``border`` (depth, trees) of float32 border tests (depth first: the
    bits of one level are contiguous, so the leaf index is one small matrix product), ``leaf_offset``
    (trees,) into the flat ``leaves``, and ``model_start`` (models,) the first tree of each model (trees of a
    model are contiguous); ``scale``/``bias`` per model.
    """

    feature: np.ndarray
    border: np.ndarray
    leaf_offset: np.ndarray
    leaves: np.ndarray
    model_start: np.ndarray
    scale: np.ndarray
    bias: np.ndarray

    @classmethod
    def from_json(cls, models: list[dict[str, Any]]) -> ObliviousEnsemble:
        """Build from CatBoost JSON dumps (``save_model(format="json")``) of single-dimension models."""
        trees = [tree for model in models for tree in model["oblivious_trees"]]
        depth = max((len(t["splits"]) for t in trees), default=1)
        feature = np.zeros((len(trees), depth), dtype=np.int64)
        border = np.full((len(trees), depth), np.inf, dtype=np.float32)
        sizes = []
        for i, tree in enumerate(trees):
            for d, split in enumerate(tree["splits"]):
                if split.get("split_type", "FloatFeature") != "FloatFeature":
                    raise SurrogateError(f"split type {split.get('split_type')!r} not supported")
                feature[i, d], border[i, d] = split["float_feature_index"], split["border"]
            sizes.append(len(tree["leaf_values"]))
        counts = [len(m["oblivious_trees"]) for m in models]
        scale_bias = [m.get("scale_and_bias", [1.0, [0.0]]) for m in models]
        return cls(np.ascontiguousarray(feature.T), np.ascontiguousarray(border.T),
                   np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64),
                   np.array([v for t in trees for v in t["leaf_values"]], dtype=np.float64),
                   np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64),
                   np.array([float(sb[0]) for sb in scale_bias]),
                   np.array([float(sb[1][0] if isinstance(sb[1], list) else sb[1]) for sb in scale_bias]))

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Raw model outputs (CatBoost's RawFormulaVal), shape (rows, models)."""
        x32 = np.asarray(x, dtype=np.float32)
        bits = x32.take(self.feature, axis=1) > self.border  # (rows, depth, trees); take: ~4x a fancy index
        # leaf index = sum of bit d x 2^d; a float64 product goes through BLAS (faster than int64 or packbits)
        # and is exact for every depth CatBoost allows (< 2^53)
        index = (np.exp2(np.arange(self.feature.shape[0], dtype=np.float64)) @ bits).astype(np.int64)
        values = self.leaves[index + self.leaf_offset]  # (rows, trees)
        return np.add.reduceat(values, self.model_start, axis=1) * self.scale + self.bias


class Surrogate:
    """The four surrogates of one base model; `predict` is vectorised over GPUs (rows)."""

    def __init__(self, metadata: dict[str, Any], models: dict[str, Any], calibration: Any = None) -> None:
        self.metadata = metadata
        self.models = models
        self.calibration = calibration
        self.feature_names: tuple[str, ...] = tuple(metadata["feature_names"])
        self.tokens_per_request = float(metadata["tokens_per_request"])
        self.threshold = float(metadata.get("starvation_threshold", 0.5))
        #: the simulated window predictions are for (a model trained on several has the window as a feature)
        self.window_s = float(metadata.get("predict_window_s") or REFERENCE_WINDOW_S)
        self._order = (*REGRESSION_TARGETS, CLASS_TARGET)
        self._fast = ObliviousEnsemble.from_json([_json_dump(models[t]) for t in self._order])

    @property
    def model(self) -> str:
        """Base model name (e.g. llama-3.1-8b-instruct)."""
        return self.metadata["model"]

    def features(self, ranks: Any, rates: Any, max_loras: int) -> dict[str, float]:
        """`gpu_features` with this surrogate's calibration (for the kv feature)."""
        return gpu_features(ranks, rates, max_loras, calibration=self.calibration)

    def matrix(self, frame: pl.DataFrame) -> np.ndarray:
        """The feature matrix of a frame holding at least the paper's seven feature columns."""
        return feature_matrix(frame, self.feature_names, self.calibration, f"surrogate {self.model}", self.window_s)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Raw outputs (rows, 4) in transformed space: NumPy trees for small batches, CatBoost for large."""
        if x.shape[0] <= SMALL_BATCH:
            return self._fast.raw(x)
        from catboost import Pool

        # one Pool for the four models (predict on an array builds one per call), from float32: CatBoost's own
        # dtype, so it copies rather than converts (the same rounding numpy's cast does)
        pool = Pool(np.asarray(x, dtype=np.float32))
        return np.column_stack([
            self.models[t].predict(pool, prediction_type="RawFormulaVal", thread_count=1) for t in self._order
        ])

    def predict_matrix(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions in natural units from a feature matrix in `feature_names` order."""
        raw = self.raw(x)
        out = {t: self.inverse(t, raw[:, i], x) for i, t in enumerate(REGRESSION_TARGETS)}
        prob = 1.0 / (1.0 + np.exp(-raw[:, len(REGRESSION_TARGETS)]))
        out["starvation_probability"] = prob
        out["starved"] = prob >= self.threshold
        return out

    def predict(self, features: pl.DataFrame) -> pl.DataFrame:
        """``total_throughput`` (tok/s), ``itl_mean_ms``, ``ttft_mean_ms``, ``starvation_probability``,
        ``starved`` for every row of ``features`` (the paper's seven columns are enough)."""
        if features.height == 1 and not context_columns(features, self.feature_names):
            values = paper_row(features)
            if values is not None:  # else the general path raises, naming the column or value
                return self.predict_row(values)
        return self.output_frame(self.predict_matrix(self.matrix(features)))

    def predict_row(self, values: tuple[float, ...]) -> pl.DataFrame:
        """`predict` of one GPU from its paper's seven values (checked: `paper_row`), features with plain
        floats (`feature_row`): one-at-a-time placement's path, the same numbers as the general one."""
        row = feature_row(values, self.feature_names, self.calibration, f"surrogate {self.model}", self.window_s)
        return self.output_frame(self.predict_matrix(np.array([row])))

    @staticmethod
    def output_frame(out: dict[str, np.ndarray]) -> pl.DataFrame:
        """The predictions frame: small ones from Python rows with inferred dtypes (Python floats are Float64,
        bools Boolean: the schema, without the cost of casting to it), large ones from the arrays."""
        if 0 < len(out["starved"]) <= ROW_FRAME_MAX:  # no rows: nothing to infer dtypes from
            columns = [out[c].tolist() for c in OUTPUT_COLUMNS]
            return pl.from_dicts([dict(zip(OUTPUT_COLUMNS, row, strict=True)) for row in zip(*columns, strict=True)])
        return pl.DataFrame(out, schema=_OUTPUT_SCHEMA)

    def inverse(self, target: str, value: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Undo the target transform of ``target`` (see `inverse_transform`)."""
        kind = self.metadata["targets"][target]["transform"]
        return inverse_transform(kind, value, basis_rate(kind, x, self.feature_names), self.tokens_per_request)

    def predict_one(self, features: dict[str, float]) -> dict[str, float]:
        """One GPU from a dict holding the paper's seven features (e.g. `gpu_features`): the same numbers as
        `predict`, without building DataFrames (placement's inner loop)."""
        try:
            given = [features[c] for c in PAPER_FEATURES]
        except KeyError as exc:
            raise FeatureError(f"surrogate {self.model}: features dict lacks {exc.args[0]!r}") from exc
        source = f"surrogate {self.model}"
        values = checked_row(given)
        if values is None:  # the general path raises, naming the field and value
            base = np.array([given], dtype=float)
            x = matrix_from_paper(check_paper_values(base, source), self.feature_names, self.calibration, source,
                                  self.window_s)
        else:
            x = np.array([feature_row(values, self.feature_names, self.calibration, source, self.window_s)])
        return {k: (bool(v[0]) if k == "starved" else float(v[0])) for k, v in self.predict_matrix(x).items()}


def basis_rate(kind: str, x: np.ndarray, names: tuple[str, ...] | list[str]) -> np.ndarray:
    """The request rate a throughput target is expressed against, per row of the feature matrix ``x``:
    ``sum_rate`` (the offered load) for ``ratio`` / ``log_ratio`` (and ``log``, which ignores it);
    min(sum_rate, capacity_rate) for ``log_capacity_ratio``, the rate the GPU can serve at its calibrated full
    batch. Why the latter: a starved GPU serves about its capacity whatever it is offered, so its throughput over
    the offered load spans decades (log-sd 0.9 on placement-shaped mixes) while over the served rate it stays
    within a narrow band (log-sd 0.14): the trees learn a residual instead of the whole saturation curve."""
    sum_rate = x[:, list(names).index("sum_rate")]
    if kind != "log_capacity_ratio":
        return sum_rate
    if "capacity_rate" not in names:
        raise SurrogateError("throughput transform log_capacity_ratio needs the capacity_rate feature "
                             "(a calibration)")
    return np.minimum(sum_rate, x[:, list(names).index("capacity_rate")])


def inverse_transform(kind: str, value: np.ndarray, rate: np.ndarray, tokens_per_request: float) -> np.ndarray:
    """Model space -> natural units: ``log`` -> exp; ``ratio`` (throughput / ideal) -> ratio x ``rate`` x
    tokens per request; ``log_ratio`` and ``log_capacity_ratio`` -> exp, then as ``ratio`` (``rate`` is
    `basis_rate`; the inverse of `adaptwin.surrogate.train.transform`)."""
    if kind == "log":
        return np.exp(value)
    if kind == "ratio":
        return np.clip(value, 0.0, None) * rate * tokens_per_request
    if kind in ("log_ratio", "log_capacity_ratio"):
        return np.exp(value) * rate * tokens_per_request
    raise SurrogateError(f"metadata.json: target transform {kind!r} unknown (expected 'log', 'ratio', "
                         "'log_ratio' or 'log_capacity_ratio')")


def _json_dump(model: Any) -> dict[str, Any]:
    """A CatBoost model as its JSON dict (through a temporary file: CatBoost has no in-memory JSON export)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.json"
        model.save_model(str(path), format="json")
        return json.loads(path.read_text())


def model_dir(model: str, models_dir: str | Path | None = None) -> Path:
    """``<models_dir>/<model>`` (default ``data/models`` under the repository root)."""
    from adaptwin.layout import Layout
    from adaptwin.paths import resolve

    return (resolve(models_dir) if models_dir else Layout.default().models()) / model


def load(model: str, models_dir: str | Path | None = None) -> Surrogate:
    """The trained surrogates of ``model`` (written by `adaptwin.surrogate.train.train_surrogates`)."""
    from catboost import CatBoostClassifier, CatBoostRegressor

    from adaptwin.calibration.costs import from_dict

    directory = model_dir(model, models_dir)
    meta_path = directory / "metadata.json"
    if not meta_path.exists():
        raise SurrogateError(f"{meta_path}: not found (run `dvc repro train_surrogates`)")
    metadata = json.loads(meta_path.read_text())
    if metadata.get("version") != SURROGATE_VERSION:
        raise SurrogateError(f"{meta_path}: version {metadata.get('version')!r}, expected {SURROGATE_VERSION}")
    models = {}
    for target in (*REGRESSION_TARGETS, CLASS_TARGET):
        path = directory / metadata["targets"][target]["file"]
        if not path.exists():
            raise SurrogateError(f"{meta_path}: targets.{target}.file: {path} not found")
        models[target] = (CatBoostClassifier if target == CLASS_TARGET else CatBoostRegressor)().load_model(str(path))
    calibration = metadata.get("calibration")
    return Surrogate(metadata, models, from_dict(calibration, f"{meta_path}: calibration") if calibration else None)
