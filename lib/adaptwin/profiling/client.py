"""OpenAI-compatible streaming completions client with per-adapter Poisson request streams.

It measures each request the way vLLM's ``benchmark_serving.py`` (0.8.5, ``async_request_openai_completions``)
does, so that profiled runs are comparable with the recorded corpus: TTFT = time from sending to the first
streamed chunk carrying ``choices``; ITL = every gap between consecutive such chunks; latency = time of the
last such chunk minus the send time; output tokens from the final ``usage`` chunk (``stream_options``).
The corpus counted output tokens by re-tokenising the text on the client, which can exceed the server
count by a few per request (data card 4.3); here the server count is used (no tokenizer needed).

Transport: a small HTTP/1.1 client on ``asyncio`` streams (chunked or plain bodies, SSE ``data:`` lines), so
thousands of concurrent streams need no extra package. Every request is bounded in time (``timeout_s``) and in
the number of events read.

Schedules are deterministic (a seeded ``numpy.random.Generator``):
``fixed_count_schedule``: ``num_prompts`` requests spread evenly over the targets, one aggregated Poisson
stream (or all at t = 0 for an infinite rate), as the fixed-count benchmark; ``by_time_schedule``: one Poisson
stream per adapter with its own rate for ``total_time`` seconds, as the by-time benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

MAX_SCHEDULED_REQUESTS = 2_000_000


@dataclass(frozen=True)
class Request:
    """One scheduled request: arrival offset (s from benchmark start), target model/adapter, prompt."""

    index: int
    arrival_s: float
    model: str
    prompt: str | list[int]
    prompt_len: int | None
    output_len: int
    ignore_eos: bool = True


@dataclass
class RequestOutput:
    """What one request measured (seconds); ``success`` False keeps ``error``."""

    index: int
    model: str
    success: bool = False
    ttft_s: float = 0.0
    latency_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    generated_text: str = ""
    error: str = ""


@dataclass
class BenchmarkResult:
    """Outputs of the requests that ended in the window, the window on the ``perf_counter`` clock."""

    outputs: list[RequestOutput]
    start_time: float
    end_time: float
    cancelled: int = 0
    #: request index -> seconds after the start at which the client really sent it (every request sent,
    #: cancelled ones included): a client sharing a busy CPU wakes late and sends the overdue ones together
    sent_s: dict[int, float] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Benchmark duration as the benchmark reports it (end minus start)."""
        return self.end_time - self.start_time


PROMPT_POOL = 256  # distinct prompts per run; requests draw from the pool (memory stays small for long runs)


#: token ids of random prompts: the corpus's range, inside every vocabulary it used
TOKEN_IDS = (1000, 30000)


def prompt_pool(
    rng: np.random.Generator, input_len: int, size: int = PROMPT_POOL, token_ids: tuple[int, int] = TOKEN_IDS
) -> list[list[int]]:
    """Pre-sampled prompts of ``input_len`` tokens (the corpus's benchmark also pre-sampled a pool)."""
    return [synthetic_prompt(rng, input_len, *token_ids) for _ in range(size)]


def sharegpt_prompts(path: str, limit: int = PROMPT_POOL) -> list[str]:
    """First human turns of a ShareGPT JSON file (a list of ``{"conversations": [{"from", "value"}, ...]}``),
    for the validation runs' workload: text prompts whose generation ends at EOS. Raises ValueError naming
    the file when it holds none."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    prompts = []
    for item in data if isinstance(data, list) else []:
        turns = item.get("conversations") if isinstance(item, dict) else None
        if isinstance(turns, list) and len(turns) >= 2 and isinstance(turns[0], dict):
            if text := str(turns[0].get("value") or "").strip():
                prompts.append(text)
        if len(prompts) >= limit:
            break
    if not prompts:
        raise ValueError(f"{path}: no conversation with two turns (ShareGPT format expected)")
    return prompts


def synthetic_prompt(
    rng: np.random.Generator, input_len: int, low: int = 1000, high: int = 30000
) -> list[int]:
    """A prompt of exactly ``input_len`` token ids (the completions API accepts token-id prompts)."""
    return rng.integers(low, high, size=int(input_len)).tolist()


def poisson_arrivals(rng: np.random.Generator, rate: float, horizon_s: float) -> np.ndarray:
    """Arrival times of a Poisson stream of ``rate`` req/s in [0, horizon_s), first arrival after a gap."""
    if rate <= 0 or horizon_s <= 0:
        return np.empty(0)
    expected = rate * horizon_s
    n = int(expected + 10 * math.sqrt(expected) + 20)
    if n > MAX_SCHEDULED_REQUESTS:
        raise ValueError(f"rate {rate} x {horizon_s} s asks for more than {MAX_SCHEDULED_REQUESTS} requests")
    times = np.cumsum(rng.exponential(1.0 / rate, size=n))
    for _ in range(1000):  # n is ~10 sigma above the mean: extending is rare, and bounded
        if times[-1] >= horizon_s:
            break
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, size=n))])
    return times[times < horizon_s]


def assign_rates(
    adapters: Sequence[str], values: Sequence[float], rng: np.random.Generator
) -> dict[str, float]:
    """Rates assigned to adapters cyclically, then shuffled (as the by-time benchmark does)."""
    cyclic = [float(values[i % len(values)]) for i in range(len(adapters))]
    order = rng.permutation(len(adapters))
    return {adapters[i]: cyclic[j] for i, j in enumerate(order)}


def by_time_schedule(
    adapter_rates: dict[str, float],
    total_time_s: float,
    input_len: int,
    output_len: int,
    rng: np.random.Generator,
    pool: list | None = None,
    token_ids: tuple[int, int] = TOKEN_IDS,
) -> list[Request]:
    """Every adapter sends its own Poisson stream for ``total_time_s``; requests sorted by arrival. ``pool``:
    text prompts (generation ends at EOS) instead of random token ids in ``token_ids`` [low, high)."""
    arrivals = [
        (float(t), name)
        for name, rate in adapter_rates.items()
        for t in poisson_arrivals(rng, rate, total_time_s)
    ]
    arrivals.sort()
    prompts = pool or prompt_pool(rng, input_len, token_ids=token_ids)
    picks = rng.integers(len(prompts), size=len(arrivals))
    return [
        _request(i, t, name, prompts[picks[i]], input_len, output_len) for i, (t, name) in enumerate(arrivals)
    ]


def _request(
    index: int, arrival_s: float, model: str, prompt: str | list[int], input_len: int, output_len: int
) -> Request:
    """Token-id prompts have a known length and ignore EOS; text prompts are measured by the server."""
    if isinstance(prompt, str):
        return Request(index, arrival_s, model, prompt, None, output_len, ignore_eos=False)
    return Request(index, arrival_s, model, prompt, input_len, output_len)


def fixed_count_schedule(
    num_prompts: int,
    targets: Sequence[str],
    rate: float,
    input_len: int,
    output_len: int,
    rng: np.random.Generator,
    pool: list | None = None,
    token_ids: tuple[int, int] = TOKEN_IDS,
) -> list[Request]:
    """``num_prompts`` requests, target ``i % len(targets)``; Poisson gaps at ``rate`` req/s (inf: all at 0)."""
    if num_prompts > MAX_SCHEDULED_REQUESTS or not targets:
        raise ValueError(f"num_prompts {num_prompts} over {len(targets)} targets is not a valid schedule")
    if math.isinf(rate):
        arrivals = np.zeros(num_prompts)
    else:
        arrivals = np.concatenate([[0.0], np.cumsum(rng.exponential(1.0 / rate, size=num_prompts - 1))])
    prompts = pool or prompt_pool(rng, input_len, min(PROMPT_POOL, num_prompts), token_ids)
    picks = rng.integers(len(prompts), size=num_prompts)
    return [
        _request(i, float(arrivals[i]), targets[i % len(targets)], prompts[picks[i]], input_len, output_len)
        for i in range(num_prompts)
    ]


def completion_payload(request: Request) -> dict:
    """The JSON body the vLLM benchmark sends for a streaming completion."""
    payload = {
        "model": request.model,
        "prompt": request.prompt,
        "temperature": 0.0,
        "max_tokens": request.output_len,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.ignore_eos:
        payload["ignore_eos"] = True
    return payload


async def send_request(base_url: str, request: Request, timeout_s: float | None = None,
                       sent: dict[int, float] | None = None, origin: float = 0.0) -> RequestOutput:
    """Send one streaming completion and measure it; errors and timeouts give ``success=False``. ``timeout_s``
    None: no limit (by-time runs end at their window). ``sent`` records when it was sent (seconds after
    ``origin``, the ``perf_counter`` time of the benchmark's start)."""
    out = RequestOutput(request.index, request.model, prompt_tokens=request.prompt_len or 0)
    start = time.perf_counter()
    if sent is not None:
        sent[request.index] = start - origin
    try:
        await asyncio.wait_for(_measure(base_url, request, out, start), timeout=timeout_s)
    except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
        out.success, out.error = False, f"{type(exc).__name__}: {exc}"
    return out


async def _measure(base_url: str, request: Request, out: RequestOutput, start: float) -> None:
    last = start
    chunks = 0
    max_events = 4 * request.output_len + 64
    async for data in post_sse(base_url, "/v1/completions", completion_payload(request), max_events):
        now = time.perf_counter()
        if data.get("choices"):
            if chunks == 0:
                out.ttft_s = now - start
            else:
                out.itl_s.append(now - last)
            last = now
            chunks += 1
            out.generated_text += data["choices"][0].get("text") or ""
        elif usage := data.get("usage"):
            out.output_tokens = int(usage.get("completion_tokens") or 0)
            out.prompt_tokens = int(usage.get("prompt_tokens") or out.prompt_tokens)
    if chunks == 0:
        raise ValueError("stream ended without any completion chunk")
    out.latency_s = last - start
    out.output_tokens = out.output_tokens or chunks
    out.success = True


async def post_sse(base_url: str, path: str, payload: dict, max_events: int) -> AsyncIterator[dict]:
    """POST ``payload`` as JSON and yield each server-sent ``data:`` JSON object until ``[DONE]``."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port or 80)
    try:
        body = json.dumps(payload).encode("utf-8")
        head = (
            f"POST {url.path.rstrip('/')}{path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
        status, headers = await _read_head(reader)
        if status != 200:
            text = (await reader.read(4096)).decode("utf-8", "replace")
            raise ValueError(f"HTTP {status}: {text.strip()[:300]}")
        events = 0
        async for line in _lines(_body(reader, headers)):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            events += 1
            if events > max_events:
                raise ValueError(f"more than {max_events} stream events")
            yield json.loads(data)
    finally:
        writer.close()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"bad HTTP status line {status_line!r}")
    headers: dict[str, str] = {}
    for _ in range(200):
        line = (await reader.readline()).strip()
        if not line:
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """Body bytes as they arrive: chunked transfer coding, Content-Length, or until the connection closes."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)  # CRLF after each chunk
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while chunk := await reader.read(65536):
            yield chunk


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r")
    if buffer:
        yield buffer


async def run_schedule(
    base_url: str, requests: Sequence[Request], window_s: float | None = None, timeout_s: float | None = None
) -> BenchmarkResult:
    """Send each request at its arrival offset. With ``window_s`` (by-time) requests still running at the end of
    the window are cancelled and dropped, and ``timeout_s`` is not applied (a queued request of an overloaded
    run is measured however late, as in the corpus); without it (fixed-count) every request is awaited."""
    if window_s is not None:
        timeout_s = None
    start = time.perf_counter()
    tasks: list[asyncio.Task] = []
    sent: dict[int, float] = {}
    for request in sorted(requests, key=lambda r: r.arrival_s):
        if window_s is not None and request.arrival_s >= window_s:
            break
        await asyncio.sleep(max(0.0, start + request.arrival_s - time.perf_counter()))
        tasks.append(asyncio.create_task(send_request(base_url, request, timeout_s, sent, start)))
    cancelled = 0
    if window_s is None:
        outputs = list(await asyncio.gather(*tasks))
    else:
        remaining = max(0.0, start + window_s - time.perf_counter())
        done, pending = await asyncio.wait(tasks, timeout=remaining) if tasks else (set(), set())
        cancelled = len(pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(max(0.0, start + window_s - time.perf_counter()))  # the window is the duration
        outputs = sorted((t.result() for t in done), key=lambda o: o.index)
    return BenchmarkResult(outputs, start, time.perf_counter(), cancelled, sent)


def run_benchmark(
    base_url: str, requests: Sequence[Request], window_s: float | None = None, timeout_s: float | None = None
) -> BenchmarkResult:
    """Blocking wrapper of ``run_schedule`` (own event loop)."""
    raise_open_file_limit()
    return asyncio.run(run_schedule(base_url, requests, window_s, timeout_s))


def raise_open_file_limit() -> None:
    """One socket per in-flight request (as the vLLM benchmark, a session per request): lift the soft limit
    on open files to the hard limit so thousands of queued requests do not fail with EMFILE."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
