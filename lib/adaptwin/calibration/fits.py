"""Small, generic fitting helpers shared by every cost model.

Each cost model of `adaptwin.calibration.models` reduces to one of these: a (non-negative) linear least-squares
fit, a piecewise-linear interpolant through measured points, or an expected-value formula. Keeping them here
means the arithmetic is written once and tested on synthetic data with known parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear


@dataclass(frozen=True)
class LinearFit:
    """Coefficients of ``y = X @ coef`` with named columns, plus the fit's residual summary."""

    names: tuple[str, ...]
    coef: tuple[float, ...]
    quality: dict[str, float]

    def params(self) -> dict[str, float]:
        """The coefficients by column name (what goes into the calibration JSON)."""
        return dict(zip(self.names, self.coef, strict=True))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Evaluate the fit on a design matrix with the same columns."""
        return np.asarray(X, dtype=float) @ np.asarray(self.coef)


def fit_quality(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """R², RMSE and relative errors: the numbers `fit_quality` of the calibration JSON reports per cost model.

    Relative errors are what matter to the twin (a 2 ms error is large at 13 ms and negligible at 150 ms).
    """
    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float)
    resid = pred - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    rel = np.abs(resid) / np.where(y == 0, np.nan, np.abs(y))
    return {
        "n": int(len(y)),
        "r2": float(1.0 - (resid**2).sum() / ss_tot) if ss_tot > 0 else 1.0,
        "rmse": float(np.sqrt((resid**2).mean())),
        "mean_abs_rel_err_pct": float(np.nanmean(rel) * 100),
        "max_abs_rel_err_pct": float(np.nanmax(rel) * 100),
    }


def fit_linear(X: np.ndarray, y: np.ndarray, names: list[str] | tuple[str, ...], *,
               nonnegative: bool = True, relative: bool = False) -> LinearFit:
    """Least squares ``y ≈ X @ coef``.

    ``nonnegative`` keeps every coefficient >= 0, because each is a physical cost (seconds per sequence, per
    token, ...) and a negative one would make the twin's step time decrease with load when extrapolated.
    ``relative`` minimises relative instead of absolute residuals (each row divided by ``y``), so that runs
    with small latencies weigh as much as runs with large ones.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[1] != len(names):
        raise ValueError(f"fit_linear: design {X.shape} does not match y {y.shape} and names {list(names)}")
    if X.shape[0] < X.shape[1]:
        raise ValueError(f"fit_linear: {X.shape[0]} points cannot determine {X.shape[1]} coefficients {list(names)}")
    w = 1.0 / np.abs(y) if relative else np.ones_like(y)
    bounds = (0.0, np.inf) if nonnegative else (-np.inf, np.inf)
    coef = lsq_linear(X * w[:, None], y * w, bounds=bounds, method="bvls").x
    return LinearFit(tuple(names), tuple(float(c) for c in coef), fit_quality(y, X @ coef))


def interp_extrap(x: float | np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation through ``(xs, ys)`` with linear extrapolation beyond both ends.

    The same rule as `adaptwin.calibration.costs._interp`, vectorised for fitting and plotting.
    """
    xs = np.asarray(xs, dtype=float)
    ys = np.asarray(ys, dtype=float)
    x = np.asarray(x, dtype=float)
    if len(xs) == 1:
        return np.full_like(x, ys[0])
    i = np.clip(np.searchsorted(xs, x, side="left"), 1, len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def expected_distinct(adapters: float | np.ndarray, batch: float | np.ndarray) -> np.ndarray:
    """Expected number of distinct adapters among ``batch`` requests each drawn uniformly from ``adapters``.

    ``R (1 - (1 - 1/R)^B)``. The LoRA-overhead runs spread requests over ``restrict_loras`` adapters and do not
    record the distinct adapters per batch, so the overhead is fitted against this expectation at the run's
    mean batch size (``batch`` may be fractional).
    """
    r = np.asarray(adapters, dtype=float)
    b = np.asarray(batch, dtype=float)
    if np.any(r < 1) or np.any(b < 0):
        raise ValueError(f"expected_distinct: adapters must be >= 1 and batch >= 0, got {r!r}, {b!r}")
    return r * (1.0 - (1.0 - 1.0 / r) ** b)
