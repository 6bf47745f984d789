"""adaptwin.surrogate: CatBoost surrogates of the twin (features, training, loading, evaluation).

Placement calls `gpu_features(ranks, rates, max_loras)` and `load(model).predict(frame)` (or
`.predict_one(features)` for one GPU without DataFrames). See `features`, `train`, `model`, `evaluate`.
"""

from adaptwin.surrogate.features import PAPER_FEATURES, FeatureError, gpu_features, real_run_features
from adaptwin.surrogate.model import OUTPUT_COLUMNS, Surrogate, SurrogateError, load

__all__ = [
    "OUTPUT_COLUMNS", "PAPER_FEATURES", "FeatureError", "Surrogate", "SurrogateError", "gpu_features", "load",
    "real_run_features",
]
