"""Prometheus text-format parser and a background poller of a vLLM server's ``/metrics`` endpoint.

Why a real parser: the recorded corpus polled ``/metrics`` with a number pattern that rejected scientific
notation, so every counter read 0 once it reached 1,000,000 (printed as ``1.0e+06``; data card section 6).
This parser follows the text exposition format: ``# HELP`` / ``# TYPE`` / other comments, metric names with
colons, label sets with escaped values (``\\\\``, ``\\"``, ``\\n``), values in any float syntax including
``NaN``, ``+Inf``, ``-Inf`` and exponents, and an optional timestamp.

The poller maps the vLLM metrics onto the columns of the ``timeseries`` table with the same meaning as the
replay ingest (data card 4.5): ``finished`` is the *first* ``vllm:request_success_total`` series, as in the
corpus, not the sum over ``finished_reason`` labels (``Metrics.total`` gives that sum).
"""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

#: timeseries column -> (metric name, how to reduce several series: "first" or "sum")
VLLM_METRICS: dict[str, tuple[str, str]] = {
    "num_running": ("vllm:num_requests_running", "sum"),
    "num_waiting": ("vllm:num_requests_waiting", "sum"),
    "num_preempted": ("vllm:num_preemptions_total", "sum"),
    "gpu_cache_usage": ("vllm:gpu_cache_usage_perc", "sum"),
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
    return {
        column: (metrics.first(name) if how == "first" else metrics.total(name))
        for column, (name, how) in mapping.items()
    }


@dataclass(frozen=True)
class PollSample:
    """One successful poll: ``time_raw`` is ``time.perf_counter()`` when the response arrived."""

    time_raw: float
    values: dict[str, float | None]


class MetricsPoller:
    """Background thread scraping ``url`` every ``interval_s`` (the corpus used ~2 s) until ``stop()``.

    A failed scrape (connection error, bad text) is counted in ``errors`` and leaves a gap, like the corpus's
    "Error while running usage checker" lines; it never stops the run. ``max_samples`` bounds the loop.
    """

    def __init__(
        self,
        url: str,
        interval_s: float = 2.0,
        timeout_s: float = 5.0,
        max_samples: int = 100_000,
        fetch: Callable[[str, float], str] | None = None,
    ) -> None:
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_samples = max_samples
        self.samples: list[PollSample] = []
        self.errors: list[str] = []
        self._fetch = fetch or fetch_text
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-poller", daemon=True)

    def start(self) -> MetricsPoller:
        """Start polling in the background; returns self."""
        self._thread.start()
        return self

    def stop(self) -> list[PollSample]:
        """Stop polling, wait for the thread, take one closing scrape, return the samples.

        The closing scrape makes the series end after the drain whatever the interval's phase, so the
        counters' last values (total tokens, preemptions) are always in the table.
        """
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + self.interval_s + 1.0)
        if self._thread.is_alive():  # a scrape is still hanging: do not race it for ``samples``
            return self.samples
        self.poll_once()
        return self.samples

    def poll_once(self) -> PollSample | None:
        """One scrape; appends and returns the sample, or records the error and returns None."""
        try:
            text = self._fetch(self.url, self.timeout_s)
            sample = PollSample(time.perf_counter(), extract(parse(text)))
        except (OSError, PrometheusParseError, UnicodeDecodeError) as exc:
            self.errors.append(f"{time.perf_counter():.3f}: {exc}")
            return None
        self.samples.append(sample)
        return sample

    def __enter__(self) -> MetricsPoller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        attempts = 0
        while not self._stop.is_set() and attempts < self.max_samples:
            attempts += 1
            self.poll_once()
            self._stop.wait(self.interval_s)


def fetch_text(url: str, timeout_s: float) -> str:
    """GET ``url`` and return the body as text (the poller's default transport)."""
    with _NO_PROXY.open(url, timeout=timeout_s) as response:
        return response.read().decode("utf-8")


# The server is the one this harness launched on this node: never route its scrapes through an HTTP proxy.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
