"""Request lengths (prompt tokens, output tokens) for every simulated request.

``sharegpt``: the real runs send ShareGPT conversations (first prompt and answer) filtered to prompts of
4..1024 tokens and prompt + output <= 2048 (Llama-2 tokenizer); the corpus records mean 251 / 231 tokens
in / out, P25 23 / 27, P75 423 / 357 (data card section 3). Two shapes with exactly those means:

* ``shape: pool`` (default): uniform draws from 15,200 real (prompt, output) pairs of the ShareGPT file
  itself (`sharegpt_pool`: approximate token counts scaled to the recorded means, benchmark filter). Its
  quartiles, which it was not fitted to, are 23 / 429 and 29 / 361. It keeps the joint structure the
  statistics lack: heavy tails and a negative prompt/answer correlation (log-correlation -0.46), which
  decide how many requests fit the KV cache of a saturated server;
* ``shape: quantiles``: a distribution built from the four statistics alone. Each marginal's quantile
  function is log-linear from the minimum (4 in, 1 out) to P25 and from P25 to P75, and above P75
  ``P75 + (max - P75) * ((u - 0.75) / 0.25) ** gamma`` up to the filter's maximum (1024 in, 2044 out), with
  ``gamma`` (1.0345 in, 4.352 out) solved so the mean is 251 / 231 after the joint truncation; prompt and
  output independent, output capped at 2048 - prompt. Its tails are heavier than the real file's.

Rescaling: tokenizers differ, so with ``input_mean`` / ``output_mean`` every prompt / output is multiplied by
``input_mean / 251`` / ``output_mean / 231`` (then rounded, at least 1). Defaults per model: the model card's
``length_means`` (`adaptwin.model_cards`: 222.74 / 196.12 for Llama-3.1 and Qwen-2.5, the raw 251 / 231
for Llama-2); a model without a card uses the raw means.

``fixed``: every request has ``input`` / ``output`` tokens. ``trace``: rows drawn uniformly (with
replacement) from a trace CSV (``num_prefill_tokens``, ``num_decode_tokens``); when arrivals replay the
same trace, each request keeps its own row's lengths instead (see `arrivals`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from adaptwin import paths
from adaptwin.model_cards import CARDS

#: real ShareGPT (prompt, output) length pairs, built once by `adaptwin.twin.sharegpt_pool`
POOL_PATH = Path(__file__).parent / "data" / "sharegpt_lengths.npz"

SHAREGPT_IN = {"lo": 4.0, "p25": 23.0, "p75": 423.0, "hi": 1024.0, "gamma": 1.0345209715485209, "mean": 251.0}
SHAREGPT_OUT = {"lo": 1.0, "p25": 27.0, "p75": 357.0, "hi": 2044.0, "gamma": 4.3520439521867065, "mean": 231.0}
SHAREGPT_MAX_TOTAL = 2048


def sharegpt_quantile(u: np.ndarray, spec: dict[str, float]) -> np.ndarray:
    """Quantile function of one ShareGPT marginal (unscaled tokens) at probabilities ``u``."""
    u = np.asarray(u, dtype=np.float64)
    lo, p25, p75, hi = spec["lo"], spec["p25"], spec["p75"], spec["hi"]
    out = np.empty_like(u)
    low, top = u < 0.25, u >= 0.75
    mid = ~(low | top)
    out[low] = lo * np.exp(np.log(p25 / lo) * (u[low] / 0.25))
    out[mid] = p25 * np.exp(np.log(p75 / p25) * ((u[mid] - 0.25) / 0.5))
    out[top] = p75 + (hi - p75) * ((u[top] - 0.75) / 0.25) ** spec["gamma"]
    return out


def sharegpt_means(model: str, spec: dict[str, Any]) -> tuple[float, float]:
    """Target (input, output) means: the scenario's, else the model's default."""
    base = CARDS[model].length_means if model in CARDS else (SHAREGPT_IN["mean"], SHAREGPT_OUT["mean"])
    return float(spec.get("input_mean", base[0])), float(spec.get("output_mean", base[1]))


def sample_lengths(spec: dict[str, Any], n: int, rng: np.random.Generator, model: str) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (prompt, output) token counts drawn from the scenario's length distribution."""
    kind = spec["kind"]
    if kind == "fixed":
        return np.full(n, spec["input"], dtype=np.int64), np.full(n, spec["output"], dtype=np.int64)
    if kind == "trace":
        prompts, outputs = read_trace_lengths(spec["path"])
        rows = rng.integers(0, len(prompts), size=n)
        return prompts[rows], outputs[rows]
    in_mean, out_mean = sharegpt_means(model, spec)
    if spec.get("shape", "pool") == "pool":
        pool_prompts, pool_outputs = read_pool()
        rows = rng.integers(0, len(pool_prompts), size=n)
        prompt, output = pool_prompts[rows], pool_outputs[rows]
    else:
        prompt = sharegpt_quantile(rng.random(n), SHAREGPT_IN)
        output = np.minimum(sharegpt_quantile(rng.random(n), SHAREGPT_OUT), SHAREGPT_MAX_TOTAL - prompt)
    prompt = np.maximum(1, np.rint(prompt * in_mean / SHAREGPT_IN["mean"])).astype(np.int64)
    output = np.maximum(1, np.rint(output * out_mean / SHAREGPT_OUT["mean"])).astype(np.int64)
    return prompt, output


def mean_tokens(spec: dict[str, Any], model: str) -> float:
    """Mean prompt + output tokens per request of the distribution (for the ideal throughput)."""
    if spec["kind"] == "fixed":
        return float(spec["input"] + spec["output"])
    if spec["kind"] == "trace":
        prompts, outputs = read_trace_lengths(spec["path"])
        return float(prompts.mean() + outputs.mean())
    return float(sum(sharegpt_means(model, spec)))


@lru_cache(maxsize=1)
def read_pool() -> tuple[np.ndarray, np.ndarray]:
    """The ShareGPT (prompt, output) pool (unscaled, Llama-2 token means 251 / 231) as float arrays."""
    with np.load(POOL_PATH) as data:
        return data["prompt"].astype(np.float64), data["output"].astype(np.float64)


@lru_cache(maxsize=4)
def read_trace(path: str) -> np.ndarray:
    """The trace CSV as an (n, 3) array: arrived_at, num_prefill_tokens, num_decode_tokens (cached: read once
    per process, never modified)."""
    resolved = paths.resolve(path)
    with resolved.open() as fh:
        header = fh.readline().strip().split(",")
    wanted = ["arrived_at", "num_prefill_tokens", "num_decode_tokens"]
    if header[:3] != wanted:
        raise ValueError(f"{path}: trace columns {header!r}, expected {wanted}")
    table = np.loadtxt(resolved, delimiter=",", skiprows=1, ndmin=2)
    table.setflags(write=False)
    return table


def read_trace_lengths(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output token counts of every trace row (at least 1 each)."""
    table = read_trace(path)
    return np.maximum(1, table[:, 1].astype(np.int64)), np.maximum(1, table[:, 2].astype(np.int64))
