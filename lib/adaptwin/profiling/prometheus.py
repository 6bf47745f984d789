"""Prometheus text-format parser and a background poller of a vLLM server's ``/metrics`` endpoint.

Why a real parser: the recorded corpus polled ``/metrics`` with a number pattern that rejected scientific
notation, so every counter read 0 once it reached 1,000,000 (printed as ``1.0e+06``; data card section 6).
This parser follows the text exposition format: ``# HELP`` / ``# TYPE`` / other comments, metric names with
colons, label sets with escaped values (``\\\\``, ``\\"``, ``\\n``), values in any float syntax including
``NaN``, ``+Inf``, ``-Inf`` and exponents, and an optional timestamp.

The poller maps the vLLM metrics onto the columns of the ``timeseries`` table with the same meaning as the
replay ingest (data card 4.5): ``finished`` is the *first* ``vllm:request_success_total`` series, as in the
corpus, not the sum over ``finished_reason`` labels (``Metrics.total`` gives that sum). Metric names of
current vLLM releases are read too (``vllm:kv_cache_usage_perc`` replaced ``gpu_cache_usage_perc``).

Beyond the table's columns each sample keeps what checks a run against the server: every finished request
over all reasons (``finished_total``) and the adapters running and waiting, from the
``vllm:lora_requests_info`` gauge. That gauge's value is the time its label set was last set, and old label
sets stay exported, so the current state is the series with the largest value.

Scrapes are cheap for the client and parsing is not: ``/metrics`` grows with every adapter and histogram, and
parsing in the poller thread competes with the client's event loop for the interpreter. So the poller only
fetches (with a generous timeout) and keeps the raw text; ``stop()`` parses it after the benchmark.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: timeseries column -> (metric name, alternatives joined by "|", how to reduce several series: "first"/"sum")
VLLM_METRICS: dict[str, tuple[str, str]] = {
    "num_running": ("vllm:num_requests_running", "sum"),
    "num_waiting": ("vllm:num_requests_waiting", "sum"),
    "num_preempted": ("vllm:num_preemptions_total", "sum"),
    "gpu_cache_usage": ("vllm:gpu_cache_usage_perc|vllm:kv_cache_usage_perc", "sum"),
    "finished": ("vllm:request_success_total", "first"),
    "prompt_tokens_total": ("vllm:prompt_tokens_total", "sum"),
    "generation_tokens_total": ("vllm:generation_tokens_total", "sum"),
}

_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


class PrometheusParseError(ValueError):
    """A line of the exposition text that does not follow the format (the message quotes the line)."""


@dataclass(frozen=True)
class Sample:
    """One series value: metric name, labels, value, optional timestamp (ms since the epoch)."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass
class Metrics:
    """All samples of one scrape, in text order, with the declared types (``# TYPE``)."""

    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)

    def series(self, name: str, **labels: str) -> list[Sample]:
        """Samples of ``name`` whose labels include ``labels``, in text order."""
        return [
            s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def first(self, name: str, **labels: str) -> float | None:
        """Value of the first matching series (the corpus's semantics for ``finished``), None if absent."""
        found = self.series(name, **labels)
        return found[0].value if found else None

    def total(self, name: str, **labels: str) -> float | None:
        """Sum over all matching series (e.g. finished requests over every ``finished_reason``)."""
        found = self.series(name, **labels)
        return math.fsum(s.value for s in found) if found else None


def parse(text: str) -> Metrics:
    """Parse Prometheus text exposition format; raise ``PrometheusParseError`` naming the bad line."""
    metrics = Metrics()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            _parse_comment(line, metrics)
            continue
        try:
            metrics.samples.append(_parse_sample(line))
        except (ValueError, IndexError) as exc:
            raise PrometheusParseError(f"line {number}: {raw!r}: {exc}") from None
    return metrics


def parse_value(token: str) -> float:
    """A sample value: Go/Python float syntax plus ``+Inf``/``-Inf``/``NaN`` in any case."""
    return float(token)  # float() accepts 1.0e+06, 1E6, NaN, +Inf, -Inf, inf


def _parse_comment(line: str, metrics: Metrics) -> None:
    parts = line[1:].split(None, 3)
    if len(parts) >= 3 and parts[0] == "TYPE":
        metrics.types[parts[1]] = parts[2]


def _parse_sample(line: str) -> Sample:
    name_end = _name_end(line)
    name = line[:name_end]
    if not name:
        raise ValueError("missing metric name")
    labels: dict[str, str] = {}
    rest = line[name_end:]
    if rest.startswith("{"):
        labels, consumed = _parse_labels(rest)
        rest = rest[consumed:]
    tokens = rest.split()
    if not tokens or len(tokens) > 2:
        raise ValueError("expected a value and an optional timestamp")
    timestamp = int(tokens[1]) if len(tokens) == 2 else None
    return Sample(name, labels, parse_value(tokens[0]), timestamp)


def _name_end(line: str) -> int:
    for i, ch in enumerate(line):
        if not (ch.isalnum() or ch in "_:"):
            return i
    return len(line)


def _parse_labels(text: str) -> tuple[dict[str, str], int]:
    """Parse ``{a="x",b="y\\"z"}`` at the start of ``text``; return the labels and characters consumed."""
    labels: dict[str, str] = {}
    i = 1
    while True:
        while text[i] in " ,":
            i += 1
        if text[i] == "}":
            return labels, i + 1
        eq = text.index("=", i)
        key = text[i:eq].strip()
        i = eq + 1
        while text[i] == " ":
            i += 1
        if text[i] != '"':
            raise ValueError(f"label {key!r}: value not quoted")
        value, i = _parse_quoted(text, i + 1)
        labels[key] = value


def _parse_quoted(text: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    while text[i] != '"':
        if text[i] == "\\":
            out.append(_ESCAPES.get(text[i + 1], "\\" + text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out), i + 1


def extract(metrics: Metrics, mapping: dict[str, tuple[str, str]] = VLLM_METRICS) -> dict[str, float | None]:
    """The timeseries columns of one scrape (None where the server does not export the metric)."""
    values: dict[str, float | None] = {}
    for column, (names, how) in mapping.items():
        found = None
        for name in names.split("|"):
            found = metrics.first(name) if how == "first" else metrics.total(name)
            if found is not None:
                break
        values[column] = found
    return values


@dataclass(frozen=True)
class LoraState:
    """The adapters running and waiting at one scrape, and the A_max the server reports (``max_lora``)."""

    running: tuple[str, ...]
    waiting: tuple[str, ...]
    max_lora: int | None


def lora_state(metrics: Metrics) -> LoraState | None:
    """The current ``vllm:lora_requests_info`` label set (the series with the largest value), or None."""
    found = metrics.series("vllm:lora_requests_info")
    if not found:
        return None
    latest = max(found, key=lambda s: s.value)
    raw_max = latest.labels.get("max_lora", "")
    return LoraState(_split(latest, "running"), _split(latest, "waiting"), int(raw_max) if raw_max.isdigit() else None)


def _split(sample: Sample, which: str) -> tuple[str, ...]:
    return tuple(a for a in sample.labels.get(f"{which}_lora_adapters", "").split(",") if a)


@dataclass(frozen=True)
class PollSample:
    """One successful poll: ``time_raw`` is ``time.perf_counter()`` when the response arrived; ``values``
    are the timeseries columns, ``finished_total`` every finished request (all reasons), ``lora`` the
    adapters' state (None when the server exports no ``lora_requests_info``)."""

    time_raw: float
    values: dict[str, float | None]
    finished_total: float | None = None
    lora: LoraState | None = None


def sample_from_text(time_raw: float, text: str) -> PollSample:
    """Parse one scrape into a ``PollSample``."""
    metrics = parse(text)
    return PollSample(
        time_raw, extract(metrics), metrics.total("vllm:request_success_total"), lora_state(metrics)
    )


class MetricsPoller:
    """Background thread scraping ``url`` every ``interval_s`` (the corpus used ~2 s) until ``stop()``.

    A failed scrape (connection error, bad text) is counted in ``errors`` and leaves a gap, like the corpus's
    "Error while running usage checker" lines; it never stops the run. ``max_samples`` bounds the loop. The
    loop keeps raw texts; ``stop()`` parses them (``samples`` is complete after ``stop()``).
    """

    def __init__(
        self,
        url: str,
        interval_s: float = 2.0,
        timeout_s: float = 30.0,
        max_samples: int = 100_000,
        fetch: Callable[[str, float], str] | None = None,
    ) -> None:
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_samples = max_samples
        self.samples: list[PollSample] = []
        self.errors: list[str] = []
        self._raw: list[tuple[float, str]] = []
        self._fetch = fetch or fetch_text
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-poller", daemon=True)

    def start(self) -> MetricsPoller:
        """Take the first scrape now, then poll in the background every ``interval_s``; returns self.

        Why the first one here: the series must begin before whatever the caller does next. Started in a
        thread alone, the first scrape came 0.7 s late on a loaded machine, after a short run had finished, and
        the run's counters then seemed not to move at all."""
        self._fetch_raw()
        self._thread.start()
        return self

    def stop(self) -> list[PollSample]:
        """Stop polling, wait for the thread, take one closing scrape, return the samples.

        The closing scrape makes the series end after the drain whatever the interval's phase, so the
        counters' last values (total tokens, preemptions) are always in the table.
        """
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + self.interval_s + 1.0)
        hanging = self._thread.is_alive()  # a scrape is still hanging: do not race it for the raw texts
        raw = list(self._raw)
        if not hanging:
            self._raw.clear()
            self._fetch_raw()
            raw += self._raw
        self._raw.clear()
        for time_raw, text in raw:
            self._add(time_raw, text)
        return self.samples

    @property
    def scrapes(self) -> int:
        """Successful scrapes so far (parsed or not)."""
        return len(self._raw) + len(self.samples)

    def poll_once(self) -> PollSample | None:
        """One scrape parsed at once; appends and returns the sample, or records the error and returns None."""
        if not self._fetch_raw():
            return None
        return self._add(*self._raw.pop())

    def _fetch_raw(self) -> bool:
        try:
            text = self._fetch(self.url, self.timeout_s)
        except (OSError, UnicodeDecodeError) as exc:
            self.errors.append(f"{time.perf_counter():.3f}: {exc}")
            return False
        self._raw.append((time.perf_counter(), text))
        return True

    def _add(self, time_raw: float, text: str) -> PollSample | None:
        try:
            sample = sample_from_text(time_raw, text)
        except PrometheusParseError as exc:
            self.errors.append(f"{time_raw:.3f}: {exc}")
            return None
        self.samples.append(sample)
        return sample

    def __enter__(self) -> MetricsPoller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        attempts = 1  # `start` took the first scrape
        while not self._stop.wait(self.interval_s) and attempts < self.max_samples:
            attempts += 1
            self._fetch_raw()


def fetch_text(url: str, timeout_s: float) -> str:
    """GET ``url`` and return the body as text (the poller's default transport)."""
    with _NO_PROXY.open(url, timeout=timeout_s) as response:
        return response.read().decode("utf-8")


# The server is the one this harness launched on this node: never route its scrapes through an HTTP proxy.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---- engine-side totals around a run ------------------------------------------------------------------------
def engine_totals(metrics: Metrics, prefix: str = "vllm:") -> dict[str, dict[str, Any]]:
    """Every ``prefix`` histogram's sum, count and cumulative buckets, and every counter's value, each summed
    over its series (engines, adapters, finish reasons).

    Why: the engine's own histograms (prefill time from scheduling to first token, decode time, queue time,
    tokens per step) are timed inside the engine core, so they leave out what a client's timings also hold
    (the API server admitting requests one after another, HTTP, detokenizing). A histogram only grows, so the
    difference of two scrapes around a run is that run's part (`engine_delta`)."""
    out: dict[str, dict[str, Any]] = {}
    for name, kind in metrics.types.items():
        if not name.startswith(prefix):
            continue
        if kind == "histogram":
            buckets: dict[str, float] = {}
            for s in metrics.series(name + "_bucket"):
                le = s.labels.get("le", "")
                buckets[le] = buckets.get(le, 0.0) + s.value
            out[name] = {"kind": kind, "sum": metrics.total(name + "_sum") or 0.0,
                         "count": metrics.total(name + "_count") or 0.0, "buckets": buckets}
        elif kind == "counter":
            value = metrics.total(name) if metrics.series(name) else metrics.total(name + "_total")
            if value is not None:
                out[name] = {"kind": kind, "value": value}
    return out


def engine_delta(before: str, after: str) -> dict[str, dict[str, Any]]:
    """What the engine counted between two scrapes (texts of ``/metrics``): per histogram the sum, count and
    bucket increments, per counter the increment. Families missing from either scrape are left out."""
    first, last = engine_totals(parse(before)), engine_totals(parse(after))
    out: dict[str, dict[str, Any]] = {}
    for name, b in first.items():
        a = last.get(name)
        if a is None or a["kind"] != b["kind"]:
            continue
        if b["kind"] == "histogram":
            out[name] = {"sum": a["sum"] - b["sum"], "count": a["count"] - b["count"],
                         "buckets": {le: a["buckets"].get(le, 0.0) - n for le, n in b["buckets"].items()}}
        else:
            out[name] = {"value": a["value"] - b["value"]}
    return out
