"""The discrete-event engine: one vLLM 0.8.5 (V1) server with LoRA, at the level of engine steps.

One plain loop over a float clock runs the engine core's loop: schedule a step (`scheduler`), advance the
clock by its duration, apply its outputs. Step duration = ``calibration.step_time(decode_seqs, prefill_tokens,
context_tokens, distinct_adapters)`` + ``calibration.scheduler_time(running, waiting examined by the scan)`` +
the load time of every adapter copied into a GPU slot in that step. ``context_tokens`` is the sum over the step's
requests of the tokens already in their KV cache (attention reads); ``distinct_adapters`` the batch's adapters;
``prefill_seqs`` (when the calibration takes it) the requests with prompt tokens in the step. Arrivals reach
the queue through the benchmark client's port limit (`client`), as in the real runs.

Speed: a step in which nothing but decoding happens (no admission, no prefill chunk, no preemption, no
load) is repeated identically until an event, so the engine advances k such steps in ONE event,
with k the largest count before: the next decoding request finishes (smallest remaining output), the KV
cache runs out of blocks (phase counts, `kv_cache`), the next arrival that the scan could admit (the
queue's heaps, `waiting`; arrivals of inactive adapters while all slots are taken do not end a jump), or
the end of the window. The context grows by ``decode_seqs`` tokens per step, so the k durations form an
arithmetic series (``step_time`` is affine in ``context_tokens``; checked per adapter count, else one step
per event). ``run_engine(..., jumps=False)`` takes one step per event; a test checks both agree. Within a jump the waiting count for the scheduler time is the one at the jump's start (only
inadmissible arrivals happen during it). ITLs are stored per step with the number of finished requests
that had a gap in it, so statistics are exact without storing every token. Cost grows with events, not
tokens.

Named invariants (each tested in tests/test_twin_invariants.py; 3-4 are asserted at every step and 1-2 at
every finish in checking mode, ``simulate(..., check=True)``):

1. Requests are conserved: per adapter, arrived = finished + unfinished (running or waiting at the end)
   + failed (never sent: the client had no free port, `client`); the client never holds more ports than
   its limit, and its outstanding requests are exactly the running plus waiting ones.
2. Tokens are conserved: a finished request emitted exactly its output length (its ITL gaps number
   output - 1) and had at least its prompt prefilled (more after a preemption).
3. The KV cache never holds more blocks than its capacity, and the block count equals the blocks the
   running requests hold.
4. Never more than A_max distinct adapters in the running batch; never more than max_num_seqs requests.
5. Same scenario and seed, same outputs: byte-identical canonical JSON (``wall_time_s`` excluded).
6. Zero load gives zero throughput (and no steps).
7. Throughput never exceeds what was offered: tokens of finished requests <= tokens of arrived requests;
   with a light load every request finishes (throughput = realised offered load).
8. Jumps change nothing: k steady steps in one event = k single steps (same steps, finishes, ITLs).
9. Monotonic sanity: with a slot for every served adapter there are no loads, otherwise at most one load
   per admission; a larger KV cache never increases preemptions under a fixed load. (More slots do not
   always mean fewer loads: with few slots the active adapters keep them while the others starve.)
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from adaptwin.calibration.costs import Calibration
from adaptwin.twin.arrivals import Workload
from adaptwin.twin.metrics import itl_pairs, step_durations
from adaptwin.twin.scenario import Scenario
from adaptwin.twin.scheduler import Scheduler, StepPlan

TIMESERIES_PERIOD_S = 2.0  # the real poller's interval


class StepTimer:
    """Step durations from the calibration, and sums of k steady decode steps.

    When ``step_time`` is affine in its token and sequence counts for a given number of distinct adapters
    (checked by probing, per adapter count), its coefficients are read once and each step is a dot product;
    otherwise every step calls it. Jumps need less: affinity in ``context_tokens`` alone (the only input that
    changes between steady steps), also checked per adapter count."""

    def __init__(self, cal: Calibration) -> None:
        self.cal = cal
        self.with_prefill_seqs = "prefill_seqs" in inspect.signature(cal.step_time).parameters
        self._coef: dict[int, tuple[float, float, float, float, float] | None] = {}
        self._context_affine: dict[int, bool] = {}
        self._decode_lines: dict[tuple[int, int], tuple[float, float]] = {}
        self._lines: dict[tuple[int, int], tuple[float, float] | None] = {}  # see `_decode_line`
        s = cal.scheduler
        self._sched = (s["intercept"], s.get("running", 0.0), s.get("waiting", 0.0))
        self._sched_affine = min(self._sched) >= 0.0  # then max(0, .) never clips
        self.jumps = True  # advance many steady steps per event (False: one by one, for checks)

    def context_affine(self, distinct: int) -> bool:
        """Whether step time is affine in context tokens for this many distinct adapters (so k steady steps
        form an arithmetic series)."""
        ok = self._context_affine.get(distinct)
        if ok is None:
            f = self._call
            ok = all(
                abs((f(d, 0, 2 * c, distinct) - f(d, 0, c, distinct)) - (f(d, 0, c, distinct) - f(d, 0, 0, distinct)))
                <= 1e-12 * max(1.0, f(d, 0, 2 * c, distinct))
                for d, c in ((1, 50_000), (64, 100_000), (1024, 400_000)))
            self._context_affine[distinct] = ok
        return ok

    def step(self, plan: StepPlan, running: int, distinct: int) -> float:
        return self.model(plan.decode_seqs, plan.prefill_tokens, plan.context_tokens, distinct,
                          plan.prefill_seqs) + self.scheduler(running, plan.visited) + plan.load_s

    def model(self, decode: int, prefill: int, context: int, distinct: int, prefill_seqs: int = 0) -> float:
        c = self._coef.get(distinct, False)
        if c is False:
            c = self._coefficients(distinct)
        if c is not None:
            return c[0] + c[1] * decode + c[2] * prefill + c[3] * context + c[4] * prefill_seqs
        if prefill == 0 and prefill_seqs == 0 and self.context_affine(distinct):
            line = self._decode_lines.get((distinct, decode))  # decode-only steps: cached per batch shape
            if line is None:
                base = self._call(decode, 0, 0, distinct)
                line = (base, (self._call(decode, 0, 1_000_000, distinct) - base) / 1_000_000)
                self._decode_lines[(distinct, decode)] = line
            return line[0] + line[1] * context
        return self._call(decode, prefill, context, distinct, prefill_seqs)

    def scheduler(self, running: int, visited: int) -> float:
        if self._sched_affine:
            s = self._sched
            return s[0] + s[1] * running + s[2] * visited
        return self.cal.scheduler_time(running, visited)

    def _call(self, decode: int, prefill: int, context: int, distinct: int, prefill_seqs: int = 0) -> float:
        if self.with_prefill_seqs:
            return self.cal.step_time(decode, prefill, context, distinct, prefill_seqs=prefill_seqs)
        return self.cal.step_time(decode, prefill, context, distinct)

    def _coefficients(self, distinct: int) -> tuple[float, float, float, float, float] | None:
        f = self._call
        c0 = f(0, 0, 0, distinct, 0)
        coef = (c0, f(1, 0, 0, distinct, 0) - c0, f(0, 1, 0, distinct, 0) - c0, f(0, 0, 1, distinct, 0) - c0,
                f(0, 0, 0, distinct, 1) - c0)
        ok = True
        for probe in ((300, 1500, 250_000, 3), (2, 0, 500, 0), (60, 0, 30_000, 0), (1000, 1000, 10**6, 5)):
            direct = f(probe[0], probe[1], probe[2], distinct, probe[3])
            affine = coef[0] + coef[1] * probe[0] + coef[2] * probe[1] + coef[3] * probe[2] + coef[4] * probe[3]
            ok = ok and abs(direct - affine) <= 1e-9 * max(1.0, abs(direct))
        self._coef[distinct] = coef if ok else None
        return self._coef[distinct]

    def decode_series(self, plan: StepPlan, running: int, distinct: int) -> tuple[float, float, bool]:
        """(d0, beta, affine): steady step j lasts d0 + beta * j, exact when ``affine`` (`context_affine`)."""
        decode, context = plan.decode_seqs, plan.context_tokens
        line = self._decode_line(decode, distinct)
        if line is None:
            first = self.model(decode, 0, context, distinct)
            beta = self.model(decode, 0, context + decode, distinct) - first
        else:  # the same arithmetic as `model`, with the line looked up once
            base, slope = line
            first = base + slope * context
            beta = (base + slope * (context + decode)) - first
        if self._sched_affine:  # `scheduler`, inlined (once per jump)
            s = self._sched
            sched = s[0] + s[1] * running + s[2] * plan.visited
        else:
            sched = self.cal.scheduler_time(running, plan.visited)
        affine = self._context_affine.get(distinct)
        if affine is None:
            affine = self.context_affine(distinct)
        return first + sched + plan.load_s, beta, affine

    def _decode_line(self, decode: int, distinct: int) -> tuple[float, float] | None:
        """(base, slope) with ``model(decode, 0, context, distinct) == base + slope * context`` evaluated in
        the same floating-point order, or None when `model` calls the calibration itself (one dict lookup
        per jump instead of two `model` calls: jumps are the hot path of a saturated server)."""
        key = (distinct, decode)
        line = self._lines.get(key, False)
        if line is False:
            c = self._coef.get(distinct, False)
            if c is False:
                c = self._coefficients(distinct)
            if c is not None:  # c0 + c1 * decode + c2 * 0 + c3 * context + c4 * 0: the zero terms add +-0.0
                line = (c[0] + c[1] * decode, c[3])
            elif self.context_affine(distinct):
                self.model(decode, 0, 0, distinct)  # fills the decode-line cache
                line = self._decode_lines[key]
            else:
                line = None
            self._lines[key] = line
        return line


def series_sum(d0: float, beta: float, k: int) -> float:
    """Sum of d0 + beta * j for j = 0..k-1."""
    return k * d0 + beta * k * (k - 1) / 2.0


def steps_within(d0: float, beta: float, budget: float, cap: int) -> int:
    """Largest k <= cap with series_sum(d0, beta, k) <= budget (steps that END within ``budget``)."""
    if budget < d0:
        return 0
    if cap <= 1:  # (the usual case on a busy server; what the corrections below give: step 0 lasts d0 + 0.0)
        return cap
    if beta <= 0:
        k = cap if d0 <= 0 else min(cap, int(budget / d0))
    else:
        b = d0 - beta / 2.0
        k = min(cap, int((-b + math.sqrt(b * b + 2.0 * beta * budget)) / beta))
    # exact corrections of the float estimate (series_sum inlined: twice per jump on the hot path)
    while k < cap and (k + 1) * d0 + beta * (k + 1) * k / 2.0 <= budget:
        k += 1
    while k > 0 and k * d0 + beta * k * (k - 1) / 2.0 > budget:
        k -= 1
    return k


@dataclass
class Recorder:
    """What the run leaves behind: step segments, batch-size integral, optional time series."""

    seg_start: list[int] = field(default_factory=list)
    seg_k: list[int] = field(default_factory=list)
    seg_d0: list[float] = field(default_factory=list)
    seg_beta: list[float] = field(default_factory=list)
    seg_t0: list[float] = field(default_factory=list)  # clock at each segment's start (`frontend`)
    busy: float = 0.0
    #: time integral of the distinct adapters in the running batch (LoRA cost grows with them)
    distinct_busy: float = 0.0
    series: list[tuple[float, float, int, int, int, int]] | None = None

    def segment(self, start: int, k: int, d0: float, beta: float, t0: float, total: float, running: int,
                distinct: int = 0) -> None:
        self.seg_start.append(start)
        self.seg_k.append(k)
        self.seg_d0.append(d0)
        self.seg_beta.append(beta)
        self.seg_t0.append(t0)
        self.busy += running * total
        self.distinct_busy += distinct * total


@dataclass
class EngineRun:
    """Raw results of one engine run (`simulate` turns them into the contract outputs)."""

    scheduler: Scheduler
    recorder: Recorder
    durations: np.ndarray
    itl_counts: np.ndarray
    end_time: float

    @property
    def steps(self) -> int:
        return int(len(self.durations))


def run_engine(scenario: Scenario, cal: Calibration, workload: Workload, *, timeseries: bool = False,
               check: bool = False, jumps: bool = True) -> EngineRun:
    """Simulate ``workload`` on the server of ``scenario`` for ``duration_s`` seconds.

    ``jumps=False`` advances one step per event (slow; for checking that jumps change nothing)."""
    if isinstance(cal, Calibration):  # stand-ins (experiments, tests) bring their own step time
        cal = cal.for_server(scenario.server.max_loras, scenario.server.max_lora_rank, scenario.served)
    sched = Scheduler(scenario, cal, workload, check=check)
    rec = Recorder(series=[] if timeseries else None)
    timer = StepTimer(cal)
    timer.jumps = jumps
    with _cyclic_gc_paused():
        end_time = _engine_loop(sched, rec, timer, scenario.duration_s)
    durations = step_durations(np.asarray(rec.seg_start, dtype=np.int64), np.asarray(rec.seg_k, dtype=np.int64),
                               np.asarray(rec.seg_d0), np.asarray(rec.seg_beta))
    counts = itl_pairs(durations, sched.done.run_starts, sched.done.run_ends)
    return EngineRun(sched, rec, durations, counts, end_time)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector during the event loop (restored after, even on error).

    A run allocates hundreds of thousands of small acyclic objects (requests, heap entries, plans) that
    reference counting frees; the collector's passes over them find almost nothing (a few dozen
    objects, collected once it is back on) yet cost 10-20 % of a saturated run. Timing only: no result
    depends on when garbage is collected."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _engine_loop(sched: Scheduler, rec: Recorder, timer: StepTimer, horizon: float) -> float:
    """The engine core's busy loop: one iteration per step or per jump of steady steps; returns the clock
    at the end.

    A plain loop over a float clock: the engine is the only process, so an event queue (SimPy's, which the
    twin used before) only added a heap push and pop and a generator resume per event. The clock advances
    as ``now + delay``, the same addition SimPy's timeouts made, so every time is the same float."""
    waiting, kv, series = sched.waiting, sched.kv, rec.series
    now = 0.0
    while True:
        if not sched.running:
            sched.ingest(now)
            if waiting.count() == 0:  # idle: sleep until the next arrival
                nxt = waiting.next_time
                if nxt >= horizon:
                    return now
                now = now + (nxt - now)  # (not nxt: the clock kept SimPy's arithmetic)
                continue
        plan = sched.schedule(now)
        running = len(sched.running)
        distinct = sched.n_active
        if series is not None:
            series.append((now, 0.0, running, waiting.count(), kv.used, 0))
        if not plan.prefills and not plan.preempted:  # plan.steady, inlined (once per event)
            k, total, d0, beta = _jump(plan, sched, timer, running, distinct, now, horizon)
            if k == 0:
                _cut(rec, running, now, horizon)
                return now
            start = sched.G
            end = now + total
            rec.segment(start, k, d0, beta, now, total, running, distinct)
            sched.advance(k, end)
        else:
            d = timer.step(plan, running, distinct)
            if now + d > horizon:
                _cut(rec, running, now, horizon)
                return now
            start = sched.G
            end = now + d
            rec.segment(start, 1, d, 0.0, now, d, running, distinct)
            sched.complete(plan, end)
        now = end
        if series is not None:
            t0, _, r, w, u0, _ = series[-1]
            series[-1] = (t0, now, r, w, u0, kv.used)


def _decode_cap(sched: Scheduler) -> int:
    """Steady steps possible before the next finish or KV exhaustion: min(steps to the next finish,
    1 + steps whose new blocks fit). Each decoding request needs at most one block per ``block_size`` steps,
    so when that bound fits the free blocks the finish decides, without scanning the decode phases."""
    fin, kv = sched.steps_to_finish(), sched.kv
    free = kv.capacity - kv.used
    if kv.decoding * -(-(fin - 1) // kv.block_size) <= free:  # need(fin - 1) <= free, so max_decode_steps
        return fin  # is >= fin - 1
    return min(fin, 1 + kv.max_decode_steps(sched.G + 1, free))


def _cut(rec: Recorder, running: int, now: float, horizon: float) -> None:
    """The window ends during a step: its tokens never reach the client, but the batch was running."""
    rec.busy += running * (horizon - now)
    if rec.series:
        t0, _, r, w, u0, _ = rec.series[-1]
        rec.series[-1] = (t0, horizon, r, w, u0, u0)


def _jump(plan: StepPlan, sched: Scheduler, timer: StepTimer, running: int, distinct: int, now: float,
          horizon: float) -> tuple[int, float, float, float]:
    """How many identical decode steps to take now: (k, their total duration, d0, beta).

    k is capped by the next finish, by KV exhaustion, by the steps that end before the horizon and by the
    steps that start before the next admissible arrival (that arrival is seen by the next schedule)."""
    d0, beta, affine = timer.decode_series(plan, running, distinct)
    if not affine:  # durations are not an arithmetic series: one step at a time (slow but exact)
        return (1 if d0 <= horizon - now else 0), d0, d0, 0.0
    cap = _decode_cap(sched)
    if not timer.jumps:
        cap = 1
    if plan.admit_at < math.inf:
        gap = math.nextafter(plan.admit_at - now, -math.inf)
        cap = min(cap, steps_within(d0, beta, gap, cap) + 1)
    k = steps_within(d0, beta, horizon - now, cap)
    return k, series_sum(d0, beta, k), d0, beta
