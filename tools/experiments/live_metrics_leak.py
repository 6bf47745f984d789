"""Does /metrics of a real vLLM server grow with LoRA adapter combinations, and do scrapes get slower?

vLLM's V1 Prometheus logger sets the gauge ``vllm:lora_requests_info`` after every engine step, labelled with
the comma-joined names of the adapters that have running and waiting requests. Every new label combination
is a new time series that is never removed, and prometheus_client renders /metrics inside the API server's
event loop. This script measures that on the CPU build of vLLM in ``.venv-vllm`` with the repository's tiny
model and zero-weight adapters:

1. starts the server (the repository's launcher) with SERVED adapters, MAX_LORAS GPU slots;
2. sends streaming completions with Poisson arrivals spread uniformly over the adapters for ``--load-s``;
3. meanwhile polls GET /metrics every 2 s (sleep, then request) and records wall time, how long the request
   took, the response size and the number of ``vllm:lora_requests_info{`` lines;
4. times a few back-to-back /metrics requests once the load has ended (server idle);
5. prints a table per minute and a least-squares fit poll_time = a + b x series; writes it to result.txt.

Run from the repository (its venv has ``adaptwin``; the server runs under ``.venv-vllm``)::

    make install-vllm && .venv-vllm/bin/python lib/adaptwin/profiling/tiny_model.py .cache/tiny-llama-seed0 --seed 0
    PYTHONPATH=lib .venv/bin/python tools/experiments/live_metrics_leak.py [--load-s 360] [--rate 10] [--work DIR]

Outcome (2026-12-03, vLLM 0.32.0 CPU build, 24 adapters, max_loras 8, 10 requests/s of 24 + 32 tokens for 360 s,
one engine thread; other jobs on the 2 cores): the ``lora_requests_info`` series never decreased and grew by
about 600 a minute, one per request (3,630 after six minutes, one per distinct (running, waiting) label); the
page grew from 124 kB to 665 kB and the median poll time per minute from 0.030 to 0.111 s with 2-4 requests
running (per-minute medians against the series count: 28 us per series, correlation 0.98; single polls are
noisy, up to 1.04 s). It does not time the server being held during a render: that rests on the code
(prometheus_client's ASGI app renders inside its async handler).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptwin.profiling import adapters, client, server
from adaptwin.profiling.prometheus import fetch_text

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / ".cache" / "tiny-llama-seed0"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
PORT = 18431
SERVED, MAX_LORAS, RANKS = 24, 8, (8, 16)
INPUT_LEN, OUTPUT_LEN = 24, 32
TOKEN_IDS = (10, 2000)  # prompt token ids, inside the tiny model's vocabulary of 2048
POLL_INTERVAL_S, IDLE_POLLS = 2.0, 5
INFO = "vllm:lora_requests_info{"
RUNNING_LABEL = re.compile(r'running_lora_adapters="([^"]*)"')
WAITING_LABEL = re.compile(r'waiting_lora_adapters="([^"]*)"')


@dataclass
class Poll:
    """One GET /metrics: when it started (s after the load started), its duration, size and series count."""

    t_s: float
    seconds: float
    size: int
    series: int
    running: float  # vllm:num_requests_running in that page


@dataclass
class Finished:
    """One completion: when it was sent and ended (s after the load started), success, largest token gap."""

    sent_s: float
    end_s: float
    success: bool
    max_gap_s: float
    error: str


def scrape(url: str) -> tuple[float, str]:
    """Seconds one GET of ``url`` takes, and the body."""
    start = time.perf_counter()
    text = fetch_text(url, timeout_s=120.0)
    return time.perf_counter() - start, text


def page_stats(text: str) -> tuple[int, float]:
    """Number of ``lora_requests_info`` series and the value of ``num_requests_running`` in a page."""
    lines = text.splitlines()
    running = sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("vllm:num_requests_running{"))
    return sum(x.startswith(INFO) for x in lines), running


def poll_loop(url: str, origin: float, stop: threading.Event, polls: list[Poll], last: list[str]) -> None:
    """Every ``POLL_INTERVAL_S``: sleep, then GET /metrics (like the measurement harness's poller)."""
    while not stop.wait(POLL_INTERVAL_S):
        t_s = time.perf_counter() - origin
        seconds, text = scrape(url)
        series, running = page_stats(text)
        polls.append(Poll(t_s, seconds, len(text.encode()), series, running))
        last[:] = [text]


async def drive_load(base_url: str, names: list[str], rate: float, load_s: float, origin: float,
                     seed: int = 0) -> tuple[int, list[Finished]]:
    """Poisson arrivals at ``rate``/s over ``load_s`` s, each to a uniformly drawn adapter; waits for all."""
    rng = np.random.default_rng(seed)
    prompts = client.prompt_pool(rng, INPUT_LEN, size=64, token_ids=TOKEN_IDS)
    finished: list[Finished] = []

    async def one(index: int) -> None:
        request = client.Request(index, 0.0, str(rng.choice(names)), prompts[index % len(prompts)],
                                 INPUT_LEN, OUTPUT_LEN)
        sent_s = time.perf_counter() - origin
        out = await client.send_request(base_url, request, timeout_s=600.0)
        gaps = [out.ttft_s, *out.itl_s]
        finished.append(Finished(sent_s, time.perf_counter() - origin, out.success, max(gaps), out.error))

    tasks = []
    next_s = rng.exponential(1 / rate)
    while next_s < load_s:
        await asyncio.sleep(max(0.0, next_s - (time.perf_counter() - origin)))
        tasks.append(asyncio.create_task(one(len(tasks))))
        next_s += rng.exponential(1 / rate)
    await asyncio.gather(*tasks)
    return len(tasks), finished


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(polls: list[Poll], idle: list[float], sent: int, finished: list[Finished], last_page: str,
           load_s: float) -> list[str]:
    """The result lines: table per minute, totals, label analysis, fit."""
    out = [f"{'minute':>6} {'series_end':>10} {'poll_med_s':>10} {'poll_max_s':>10} {'size_med_B':>10} "
           f"{'running_med':>11} {'req_sent':>8} {'req_done':>8} {'latency_med_s':>13} {'max_tok_gap_s':>13}"]
    for minute in range(int(np.ceil(load_s / 60))):
        lo, hi = 60 * minute, 60 * (minute + 1)
        mine = [p for p in polls if lo <= p.t_s < hi]
        ended = [f for f in finished if lo <= f.end_s < hi]
        if not mine:
            continue
        out.append(
            f"{minute + 1:>6} {mine[-1].series:>10} {median([p.seconds for p in mine]):>10.4f} "
            f"{max(p.seconds for p in mine):>10.4f} {median([p.size for p in mine]):>10.0f} "
            f"{median([p.running for p in mine]):>11.1f} {sum(lo <= f.sent_s < hi for f in finished):>8} "
            f"{sum(f.success for f in ended):>8} {median([f.end_s - f.sent_s for f in ended]):>13.3f} "
            f"{max((f.max_gap_s for f in ended), default=0):>13.3f}"
        )
    ok = sum(f.success for f in finished)
    errors = sorted({f.error[:120] for f in finished if not f.success})
    out.append(f"requests sent {sent}, completed successfully {ok}, failed {len(finished) - ok} {errors[:3]}")
    out.append(f"polls during load {len(polls)}; idle back-to-back polls (s): "
               + ", ".join(f"{s:.4f}" for s in idle))
    info = [x for x in last_page.splitlines() if x.startswith(INFO)]
    pairs = {(RUNNING_LABEL.search(x).group(1), WAITING_LABEL.search(x).group(1)) for x in info}
    running = {r for r, _ in pairs}
    out.append(f"final page: {len(info)} lora_requests_info series, {len(pairs)} distinct (running, waiting) "
               f"label pairs, {len(running)} distinct running label values, "
               f"{len({frozenset(r.split(',')) for r in running})} distinct running adapter sets (unordered)")
    counts = [p.series for p in polls]
    monotonic = all(b >= a for a, b in zip(counts, counts[1:], strict=False))
    out.append(f"series count never decreases between polls: {monotonic}")
    x = np.array(counts, float)
    y = np.array([p.seconds for p in polls])
    if np.ptp(x) == 0:
        return [*out, f"no fit: the series count is {counts[0] if counts else 'unknown'} in every poll"]
    b, a = np.polyfit(x, y, 1)
    out.append(f"least squares poll_s = a + b * series: a = {a:.4g} s, b = {b:.4g} s/series "
               f"({b * 1e6:.2f} us per series), correlation r = {np.corrcoef(x, y)[0, 1]:.3f}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-s", type=float, default=360.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second over all adapters")
    parser.add_argument("--work", default="/tmp/live_metrics_leak", help="adapters, server logs, result.txt")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    shape = adapters.resolve_model_shape(str(MODEL))
    folders = adapters.ensure_adapters(work / "adapters", list(RANKS), str(MODEL), shape)
    modules = {f"dummy-{i}": folders[RANKS[i % len(RANKS)]] for i in range(SERVED)}
    serve = server.ServerArgs(
        model=str(MODEL), max_loras=MAX_LORAS, max_cpu_loras=SERVED, max_lora_rank=max(RANKS), max_num_seqs=32,
        port=PORT, python=str(VLLM_PYTHON), env={"VLLM_CPU_KVCACHE_SPACE": "2", "OMP_NUM_THREADS": "1"},
    )
    command = server.build_command(serve, modules, version=server.vllm_version(str(VLLM_PYTHON)))
    launched = server.VllmServer(command, serve.base_url, work / "server_logs", ready_timeout_s=600.0,
                                 env=serve.env)
    polls: list[Poll] = []
    last: list[str] = [""]
    try:
        with launched:
            url = serve.base_url + "/metrics"
            origin = time.perf_counter()
            stop = threading.Event()
            poller = threading.Thread(target=poll_loop, args=(url, origin, stop, polls, last))
            poller.start()
            try:
                sent, finished = asyncio.run(drive_load(serve.base_url, list(modules), args.rate, args.load_s,
                                                        origin))
            finally:
                stop.set()
                poller.join()
            time.sleep(3.0)  # let the last steps' stats be recorded: the server is idle now
            idle = [scrape(url)[0] for _ in range(IDLE_POLLS)]
            last[:] = [scrape(url)[1]]
            (work / "metrics_last.txt").write_text(last[0])
    finally:
        alive = launched.process is not None and server.group_alive(launched.process)
        print(f"server process group still alive after stop: {alive}")
    lines = [f"vLLM {server.vllm_version(str(VLLM_PYTHON))}, {SERVED} adapters served, max_loras {MAX_LORAS}, "
             f"rate {args.rate}/s, load {args.load_s:.0f} s, {INPUT_LEN} prompt / {OUTPUT_LEN} output tokens",
             *report(polls, idle, sent, finished, last[0], args.load_s)]
    print("\n".join(lines))
    (work / "result.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
