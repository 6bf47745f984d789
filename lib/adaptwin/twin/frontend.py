"""The API server's front end under the benchmark's metrics poller: why a first token reaches the client later
the more adapter combinations the server has seen.

vLLM 0.8.5's V1 Prometheus logger (``vllm/v1/metrics/loggers.py``, ``PrometheusStatLogger.record``) sets one
gauge, ``vllm:lora_requests_info``, after every engine step, labelled with the comma-joined names of the
adapters that have waiting requests and of those that have running ones. Every label combination not seen
before is a new time series, and none is ever removed, so the /metrics page grows all hour. The measurement
harness polls /metrics every 2 s, and prometheus_client renders the page synchronously inside the API
server's asyncio loop: during a render the server neither takes in a request nor streams a token.

The corpus shows both halves (``tools/experiments/metrics_scrape.py``):

* the time between two polls is 2 s plus the render, and in the LoRA runs the render grows linearly over
  the hour, faster with more adapters served (5.6: median 0.05 s in the first ten minutes -> 0.47 s in the
  last at 128 served, 0.11 -> 0.85 s at 384); without LoRA it stays near 9 ms (5.1);
* on the runs the real server did not starve, real minus twin mean TTFT followed sum(render^2) / (2 x window),
  the mean wait of a request that lands in a render, with a slope near 2 (correlation 0.89 on 5.6, 0.94 on 5.9)
  while the real and twin MEDIAN TTFT agree: the gap is a tail, which a render explains and a per-step
  cost would not.

The model: a render at poll time t costs ``base_s + per_series_s x series + per_entry_s x entries``, with the
series and their label entries (adapter names) counted from the twin's own batches up to t; the next poll
starts ``interval_s`` after the render ends. A request that arrives during a render enters the engine when
it ends; a first token produced during a render reaches the client when it ends. Both shift only the
client-measured TTFT: the engine run (throughput, ITL, starvation) is left as simulated, since a render
delays a few requests by a fraction of a second in a window of an hour. (Tokens a render holds would also
reach the client together, one long inter-token gap instead of several: that reproduces the real ITL p99 but
puts the mean ITL 6-12 % above the real one, so it is not modelled.) Labels count the adapters of the
running batch and of the requests that arrived during the step (the front end's "waiting" ones); a backlog
in the engine's own queue is not counted, so renders of saturated servers are underestimated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the harness's poll interval (data card 4.5: a 2 s sleep, then the request)
DEFAULT_POLL_INTERVAL_S = 2.0
_SEED = 0x5EED  # random 64-bit keys per adapter, XORed into one hash per label (any fixed seed)


@dataclass(frozen=True)
class ScrapeCost:
    """Seconds one /metrics render blocks the API server: a fixed part, a part per LoRA label series and a
    part per adapter name in those labels (calibration block ``frontend``)."""

    base_s: float
    per_series_s: float
    per_entry_s: float


def step_bounds(seg_t0: np.ndarray, seg_k: np.ndarray, seg_d0: np.ndarray, seg_beta: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Start and end time of every engine step from the engine's segments (k steps lasting d0 + beta j from
    t0)."""
    ks = seg_k.astype(np.int64)
    j = np.arange(int(ks.sum())) - np.repeat(np.cumsum(ks) - ks, ks)
    d0, beta = np.repeat(seg_d0, ks), np.repeat(seg_beta, ks)
    start = np.repeat(seg_t0, ks) + j * d0 + beta * j * (j - 1) / 2.0
    return start, start + d0 + beta * j


def label_series(step_start: np.ndarray, step_end: np.ndarray, toggle_step: np.ndarray,
                 toggle_code: np.ndarray, arrival_times: np.ndarray, arrival_adapters: np.ndarray,
                 served: int) -> tuple[np.ndarray, np.ndarray]:
    """(time, adapter names in its label) of every new ``lora_requests_info`` series, in time order.

    ``toggle_code`` is the adapter that joined the running batch at ``toggle_step`` (>= 0) or ``~adapter``
    for one that left it; a step's label is read after its finishes, like vLLM's logger."""
    n = len(step_end)
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    keys = np.random.default_rng(_SEED).integers(0, 2**63, size=(2, max(served, 1)), dtype=np.int64)
    code = np.asarray(toggle_code, dtype=np.int64)
    steps = np.minimum(np.asarray(toggle_step, dtype=np.int64), n - 1)
    adapter = np.where(code >= 0, code, ~code)
    running_hash, running = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    np.bitwise_xor.at(running_hash, steps, keys[0][adapter])
    np.add.at(running, steps, np.where(code >= 0, 1, -1))
    running_hash, running = np.bitwise_xor.accumulate(running_hash), np.cumsum(running)
    # arrivals during a step are the front end's waiting requests when that step's outputs are logged
    at = np.searchsorted(step_end, arrival_times, side="left")
    inside = at < n
    inside[inside] = arrival_times[inside] > step_start[at[inside]]
    pairs = _distinct(at[inside] * max(served, 1) + arrival_adapters[inside].astype(np.int64))
    w_step, w_adapter = pairs // max(served, 1), pairs % max(served, 1)
    waiting_hash, waiting = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    np.bitwise_xor.at(waiting_hash, w_step, keys[1][w_adapter])
    np.add.at(waiting, w_step, 1)
    first = _first_occurrences(running_hash ^ waiting_hash)
    return step_end[first], (running + waiting)[first]


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values; a stable sort, fast on the nearly sorted codes above (``np.unique`` hashes, which
    costs seconds on the millions of arrivals of a saturated hour)."""
    ordered = np.sort(values, kind="stable")
    keep = np.ones(ordered.size, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _first_occurrences(keys: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct key, in index order."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    keep = np.ones(ordered.size, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return np.sort(order[keep])


def scrape_blocks(series_times: np.ndarray, series_entries: np.ndarray, horizon: float, interval_s: float,
                  cost: ScrapeCost) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of every /metrics render in [0, horizon): polls every ``interval_s`` after the previous
    render ended, each rendering the series created before it started."""
    entries = np.concatenate([[0], np.cumsum(series_entries)])
    starts, ends = [], []
    t = interval_s
    while t < horizon:
        made = int(np.searchsorted(series_times, t, side="right"))
        render = cost.base_s + cost.per_series_s * made + cost.per_entry_s * float(entries[made])
        starts.append(t)
        ends.append(t + render)
        t = t + render + interval_s
    return np.asarray(starts), np.asarray(ends)


def released(times: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Each time, or the end of the render it falls in (renders do not overlap)."""
    if starts.size == 0:
        return times
    j = np.searchsorted(starts, times, side="right") - 1
    inside = (j >= 0) & (times < ends[np.maximum(j, 0)])
    return np.where(inside, ends[np.maximum(j, 0)], times)


def client_ttft(arrival: np.ndarray, first: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """TTFT as the client measures it: a request held by a render reaches the engine that much later (its
    first token too), and a first token produced during a render is delivered when it ends."""
    entered = released(arrival, starts, ends)
    return released(first + (entered - arrival), starts, ends) - arrival
