"""The rules every box of the pipeline judges by, defined once: starvation, ideal throughput, SMAPE.

Why one module: the twin, its validation, the surrogates' evaluation, the placement and the measurement
figures all call a GPU starved and score predictions; if each kept its own copy, a change to one rule would
silently split the pipeline's verdicts.

- Ideal throughput: the tokens/s a server would deliver if nothing waited, sum over adapters of
  rate x mean(prompt + output tokens).
- Starvation (the paper's rule): total throughput below `STARVATION_RATIO` x ideal. A simulated GPU also knows
  the tokens that actually arrived in its window (``offered``); it is starved only when it falls short of both
  (`starvation_bar`), so a GPU that served everything it was sent is never starved by its arrivals' luck.
- SMAPE: the usual convention, |a - b| / ((|a| + |b|) / 2), in %; ``paper=True`` gives the authors' convention
  without the /2 (half the value). A pair of zeros counts as no error.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: a GPU is starved when its total throughput is below this fraction of the ideal throughput
STARVATION_RATIO = 0.9


def is_starved(throughput: float, ideal: float) -> bool:
    """The paper's starvation rule on one GPU (tokens/s)."""
    return bool(throughput < STARVATION_RATIO * ideal)


def starvation_bar(ideal: float, offered: float | None = None) -> float:
    """The tokens/s the starvation rule compares a GPU's throughput with: the ideal, or the tokens that arrived
    in the window when they were fewer.

    Why: a GPU of a few light adapters receives ~100 requests an hour; Poisson arrivals alone then put its
    throughput 10-25 % under the nominal ideal while it serves every request at once. Judged on the nominal
    ideal alone, such GPUs came out "starved" at random, the surrogates learned that light GPUs starve, and
    placement split workloads into hundreds of one-adapter GPUs. Above a few thousand requests the two are
    the same (the real runs' verdicts keep the paper's rule)."""
    return float(ideal if offered is None else min(ideal, offered))


def ideal_throughput(rates: Iterable[float], counts: Iterable[int], input_mean: float, output_mean: float) -> float:
    """Sum over adapter groups of count x rate x mean(input + output) tokens: the throughput if nothing waits."""
    total_rate = float(np.dot(np.asarray(list(rates), float), np.asarray(list(counts), float)))
    return offered_tokens(total_rate, input_mean + output_mean)


def offered_tokens(total_rate: float, tokens_per_request: float) -> float:
    """Requests/s x mean tokens per request: the ideal throughput in tokens/s."""
    return float(total_rate * tokens_per_request)


def smape(a: Iterable[float] | float, b: Iterable[float] | float, *, paper: bool = False) -> np.ndarray:
    """Symmetric absolute percentage error per element, in % (see the module docstring for the conventions)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    denom = np.abs(a) + np.abs(b)
    if not paper:
        denom = denom / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom == 0, 0.0, np.abs(a - b) / denom * 100.0)


def smape_pct(actual: Iterable[float], predicted: Iterable[float], *, paper: bool = False) -> float:
    """Mean SMAPE in % over paired values (nan when there are none)."""
    a, p = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    denom = (np.abs(a) + np.abs(p)) / 2
    terms = np.divide(np.abs(a - p), denom, out=np.zeros_like(a), where=denom > 0)
    usual = float(100 * terms.mean()) if len(a) else float("nan")
    return usual / 2 if paper else usual
