"""vLLM 0.8.5 V1 scheduling policy (``vllm/v1/core/sched/scheduler.py``), one engine step at a time.

``schedule()`` follows vLLM's ``Scheduler.schedule``:

1. RUNNING requests first, in admission order. Each decoding request takes 1 token of the step budget
   (``max_num_batched_tokens``); a partially prefilled request (at most one, the newest) continues with
   min(remaining, budget) tokens. When a request cannot get its KV blocks, the newest running request is
   preempted (blocks freed, ``num_computed_tokens`` = 0, pushed to the FRONT of the waiting queue) until it
   fits, or until the request itself was the one preempted.
2. Only if nothing was preempted, WAITING requests in queue order while budget > 0 and fewer than
   ``max_num_seqs`` run: a request whose adapter is not among the batch's adapters while A_max distinct ones
   are there is skipped (kept in place); otherwise it gets min(prompt + generated, budget) tokens if its
   blocks fit, else the scan stops.

Releases (``server.vllm_version``): the CPU build of vLLM 0.32 that the live loop runs takes the same
decisions on every path modelled here; its ``Scheduler.schedule`` was read against 0.8.5's. Running requests
first under one token budget (chunked prefill on: async scheduling is forced off on the CPU platform, and
``long_prefill_token_threshold`` defaults to 0), the newest running request preempted and prepended to the
waiting queue, waiting requests skipped while A_max other adapters are scheduled and put back at the
queue's head, the scan stopped on KV blocks, and the LoRA worker's set-order LRU activation
(`adapter_cache`) are unchanged. What differs is a default: ``max_num_seqs`` is 128 on 0.32's CPU API
server, 256 on 0.8.5 (`scenario.VLLM_VERSIONS`), which matters to every scenario that leaves it unset.

Requests are decoded by a global step counter ``G`` so that a step in which nothing but decoding happens
costs O(1) (see `kv_cache`); the engine then advances many such steps at once.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass, field

from adaptwin.calibration.costs import Calibration
from adaptwin.twin.adapter_cache import GpuSlots
from adaptwin.twin.client import ConnectionLimit
from adaptwin.twin.kv_cache import KVCache, blocks_for
from adaptwin.twin.scenario import Scenario
from adaptwin.twin.waiting import WaitingQueue, scalar_view

INGEST_PROBE = 64  # arrivals `ingest` searches before falling back to a search of all the rest


class Request:
    """One request's progress. Decoding ones keep ``cbase`` = computed - G and ``ebase`` = emitted - G."""

    __slots__ = (
        "idx", "adapter", "prompt", "output", "arrival", "seq", "emitted", "computed", "cbase", "ebase",
        "epoch", "first_time", "last_emit", "run_start", "runs", "special", "prefilled", "decoding",
    )

    def __init__(self, idx: int, adapter: int, prompt: int, output: int, arrival: float) -> None:
        self.idx, self.adapter, self.prompt, self.output, self.arrival = idx, adapter, prompt, output, arrival
        self.seq = idx
        self.emitted = self.computed = self.cbase = self.ebase = self.epoch = self.prefilled = 0
        self.first_time = self.last_emit = -1.0
        self.run_start = -1
        # ITL history kept across preemptions (lists from the first one on: most requests never have one, so
        # they share an empty tuple instead of allocating two lists): inclusive step ranges whose durations
        # are this request's ITLs (the last range is written at the finish), and the gaps spanning a preemption
        self.runs: list[tuple[int, int]] | tuple = ()
        self.special: list[float] | tuple = ()
        self.decoding = False


class StepPlan:
    """What one scheduled step computes (inputs of the step-time model) and what it changed."""

    __slots__ = ("decode_seqs", "prefill_tokens", "prefill_seqs", "context_tokens", "load_s", "visited",
                 "prefills", "preempted", "blocked", "admit_at")

    def __init__(self) -> None:
        self.decode_seqs = self.prefill_tokens = self.prefill_seqs = self.context_tokens = 0
        self.load_s = 0.0
        self.visited = 0  # waiting requests vLLM's scan examined (scheduler-time model)
        self.prefills: list[tuple[Request, int]] = []
        self.preempted = False
        self.blocked = False  # the scan stopped on a request that could not be admitted
        self.admit_at = math.inf  # earliest arrival that could be admitted (steady steps only)

    @property
    def steady(self) -> bool:
        """Nothing but decoding: the next steps repeat this one until an event."""
        return not self.prefills and not self.preempted


@dataclass
class Finished:
    """Per-request outputs the benchmark keeps (finished requests only)."""

    ttft: list[float] = field(default_factory=list)
    idx: list[int] = field(default_factory=list)  # arrival index, in finish order
    prompt_tokens: int = 0
    output_tokens: int = 0
    run_starts: list[int] = field(default_factory=list)
    run_ends: list[int] = field(default_factory=list)
    special: list[float] = field(default_factory=list)
    per_adapter: list[int] = field(default_factory=list)


class Scheduler:
    """State of one vLLM server: running batch, waiting queue, KV cache, adapter slots."""

    def __init__(self, scenario: Scenario, cal: Calibration, workload, check: bool = False) -> None:
        srv = scenario.server
        self.budget = srv.max_num_batched_tokens
        self.max_seqs = srv.max_num_seqs
        self.max_loras = srv.max_loras
        self.s_max = srv.max_lora_rank
        self.ranks = scenario.ranks.tolist()
        #: seconds a CPU -> GPU load of each adapter adds to its step (copy + swap cost), looked up per load
        self.swap_s = [cal.swap_time(r, srv.max_lora_rank) for r in self.ranks]
        self.cal = cal
        self.track_visited = bool(cal.scheduler.get("waiting", 0.0))
        self.kv = KVCache(cal.kv_capacity_blocks(srv.max_loras, srv.max_lora_rank), cal.block_size)
        self.waiting = WaitingQueue(workload.times, workload.adapters, scenario.served)
        self.slots = GpuSlots(srv.max_loras, scenario.served)
        self.prompt_of, self.output_of = scalar_view(workload.prompts), scalar_view(workload.outputs)
        self.running: dict[int, Request] = {}
        self.partial: Request | None = None
        self.active = [0] * scenario.served
        self.n_active = 0
        self.G = 0
        self.sum_cbase = 0
        self.fin_heap: list[tuple[int, int, int, Request]] = []
        self.preemptions = 0
        self.loads = 0
        self.reloads = 0  # extra copies of batch adapters evicted by a load in the same step (`adapter_cache`)
        self.admissions = 0
        self.client = ConnectionLimit(scenario.client.max_connections, scenario.client.time_wait_s)
        self.check = check
        self.done = Finished(per_adapter=[0] * scenario.served)
        #: the running batch's adapter set changes, for the front end's metrics labels (`frontend`): the step
        #: whose outputs first show the change, and the adapter that joined (``a``) or left (``~a``)
        self.toggle_step: list[int] = []
        self.toggle_code: list[int] = []

    # ---- arrivals -------------------------------------------------------------------------------------------
    def ingest(self, t: float) -> None:
        """Decide the fate of the arrivals up to ``t``: sent (they wait in the queue) or failed at the client.
        Called before the finishes at ``t`` are applied, so each arrival sees the ports held at its time."""
        waiting = self.waiting
        if t < waiting.next_time:
            return
        times, n = waiting.time_at, waiting.n
        lo = waiting.ingested
        # galloping search: usually a few arrivals since the last call, so look near `lo` first
        near = lo + INGEST_PROBE if lo + INGEST_PROBE < n else n
        hi = bisect.bisect_right(times, t, lo, near)
        if hi == near < n:
            hi = bisect.bisect_right(times, t, near)
        waiting.ingested = hi
        waiting.next_time = times[hi] if hi < n else math.inf
        client = self.client
        if client.limit is None:  # no port limit: every arrival is sent
            client.outstanding += hi - lo
            return
        for start, end in client.reject_windows(times, lo, hi):
            waiting.reject_range(start, end)

    # ---- scheduling -----------------------------------------------------------------------------------------
    def schedule(self, now: float) -> StepPlan:
        """Decide step ``G``'s batch at time ``now`` (allocates blocks, admits, preempts)."""
        if now >= self.waiting.next_time:  # (usually the step's end already ingested everything up to now)
            self.ingest(now)
        kv = self.kv
        need = kv.phase[-self.G % kv.block_size]  # `kv.decode_need`, inlined (once per event)
        plan = StepPlan()
        if need > kv.capacity - kv.used:
            need = self._preempt_for(need, now)
            plan.preempted = True
        kv.used += need
        plan.decode_seqs = kv.decoding
        plan.context_tokens = self.sum_cbase + kv.decoding * self.G
        budget = self.budget - kv.decoding
        p = self.partial
        if p is not None:
            n = min(p.prompt + p.emitted - p.computed, budget)
            add = blocks_for(p.computed + n, kv.block_size) - blocks_for(p.computed, kv.block_size)
            if add > kv.free:
                self._preempt(self.running.popitem()[1], now)
                plan.preempted = True
            else:
                kv.used += add
                plan.prefills.append((p, n))
                plan.prefill_tokens += n
                plan.context_tokens += p.computed
                budget -= n
        if not plan.preempted:
            self._admit(plan, budget, now)
        if self.check:
            self._check_invariants(plan)
        return plan

    def _admit(self, plan: StepPlan, budget: int, now: float) -> None:
        """The WAITING loop of vLLM's scheduler, driven by the queue's heaps instead of a linear scan."""
        waiting, kv, running = self.waiting, self.kv, self.running
        total = waiting.count() if self.track_visited else 0
        admitted, last = 0, None
        if budget <= 0 or len(running) >= self.max_seqs:
            return  # vLLM's waiting loop does not run: nothing examined
        times, active, block_size, max_seqs = waiting.time_at, self.active, kv.block_size, self.max_seqs
        prompts, outputs = self.prompt_of, self.output_of
        prefill_tokens = 0  # added to the plan once, after the loop
        while budget > 0 and len(running) < max_seqs:
            top = waiting.peek(self.n_active >= self.max_loras, active)
            if top is None:
                last = None
                break
            seq, a = top
            if seq >= 0:  # a new request (preempted ones, seq < 0, arrived long ago)
                arrival = times[seq]  # (scalar views: Python scalars, cheaper than numpy's)
                if arrival > now:
                    plan.admit_at = arrival
                    last = None
                    break
                tokens = prompts[seq]
            else:
                head = waiting.preempted[a][0]
                tokens = head.prompt + head.emitted
            n = tokens if tokens < budget else budget
            add = -(-n // block_size)  # blocks_for(n)
            last = seq
            if add > kv.capacity - kv.used:
                plan.blocked = True
                break
            item = waiting.pop_head(a, active[a] > 0)  # the head just peeked: int seq, or the preempted Request
            req = item if seq < 0 else Request(seq, a, tokens, outputs[seq], arrival)
            req.computed = 0
            kv.used += add
            running[req.idx] = req
            if active[a]:  # `_activate` for an adapter already in the batch (the usual case), inlined
                active[a] += 1
            else:
                self._activate(a, plan)
            plan.prefills.append((req, n))
            prefill_tokens += n
            budget -= n
            admitted += 1
        plan.prefill_tokens += prefill_tokens
        plan.prefill_seqs += admitted
        self.admissions += admitted
        if self.track_visited:  # (`_visited` when the scan ran out: all of them, the usual case)
            plan.visited = total if last is None else self._visited(total, admitted, last, plan.blocked)

    def _visited(self, total: int, admitted: int, last: int | None, blocked: bool) -> int:
        """Waiting requests vLLM's loop looked at: all of them if it ran out, else up to the last one."""
        if total == 0:
            return 0
        if last is None:
            return total
        return self.waiting.rank(last) + admitted + (1 if blocked else 0)

    def _activate(self, a: int, plan: StepPlan) -> None:
        self.active[a] += 1
        if self.active[a] == 1:
            self.n_active += 1
            self.toggle_step.append(self.G)
            self.toggle_code.append(a)
            self.waiting.activate(a)
            if self.slots.activate(a, self.active, self.G):
                self.loads += 1
                plan.load_s += self.swap_s[a]
                for b in self.slots.reloaded:
                    self.reloads += 1
                    plan.load_s += self.swap_s[b]

    def _deactivate(self, a: int, last_step: int) -> None:
        self.active[a] -= 1
        if self.active[a] == 0:
            self.n_active -= 1
            self.toggle_step.append(last_step)
            self.toggle_code.append(~a)
            self.slots.release(a, last_step)
            self.waiting.deactivate(a)

    def _preempt_for(self, need: int, now: float) -> int:
        """Preempt newest requests until the decoding requests' new blocks fit; returns the remaining need."""
        kv = self.kv
        while need > kv.free:
            req = self.running.popitem()[1]
            if req.decoding and kv.needs_block(req.cbase, self.G):
                need -= 1
            self._preempt(req, now)
        return need

    def _preempt(self, req: Request, now: float) -> None:
        """Preemption by recomputation: free everything, keep generated tokens, go to the queue's front."""
        kv = self.kv
        if type(req.runs) is tuple:  # its first preemption: from now on the request keeps an ITL history
            req.runs, req.special = [], []
        if req.decoding:
            req.computed = req.cbase + self.G
            req.emitted = req.ebase + self.G
            self._leave_decode(req)
            if self.G - 1 >= req.run_start:
                req.runs.append((req.run_start, self.G - 1))
            req.last_emit = now
        else:
            self.partial = None
        kv.used -= blocks_for(req.computed, kv.block_size)
        req.computed = 0
        self.preemptions += 1
        self._deactivate(req.adapter, self.G - 1)
        self.waiting.push_preempted(req, req.adapter, self.active[req.adapter] > 0)

    def _leave_decode(self, req: Request) -> None:
        kv, cbase = self.kv, req.cbase
        kv.remove_decode(cbase)
        self.sum_cbase -= cbase
        req.decoding = False
        req.epoch += 1

    # ---- step completion ------------------------------------------------------------------------------------
    def complete(self, plan: StepPlan, t_end: float) -> None:
        """Apply the outputs of the step just run (ended at ``t_end``): tokens, first tokens, finishes."""
        self.ingest(t_end)
        self.G += 1
        self.partial = None
        for req, n in plan.prefills:
            req.computed += n
            req.prefilled += n
            if req.computed < req.prompt + req.emitted:
                self.partial = req
                continue
            self._emit_after_prefill(req, t_end)
        self._finish_decoded(t_end)

    def advance(self, k: int, t_end: float) -> None:
        """Complete a steady step and k - 1 identical ones after it (blocks of the first already allocated)."""
        self.ingest(t_end)
        if k > 1:
            self.kv.used += self.kv.decode_need_steps(self.G + 1, k - 1)
        self.G += k
        self._finish_decoded(t_end)

    def steps_to_finish(self) -> int:
        """Steps until the next decoding request emits its last token."""
        heap = self.fin_heap
        while heap and heap[0][2] != heap[0][3].epoch:
            heapq.heappop(heap)
        return heap[0][0] - self.G if heap else 1 << 62

    def _emit_after_prefill(self, req: Request, t_end: float) -> None:
        req.emitted += 1
        if req.first_time < 0:
            req.first_time = t_end
        else:
            req.special.append(t_end - req.last_emit)
        G = self.G
        req.run_start = G
        if req.emitted >= req.output:
            self._finish(req, t_end)
            return
        req.cbase = cbase = req.computed - G
        req.ebase = req.emitted - G
        req.decoding = True
        kv = self.kv
        kv.phase[cbase % kv.block_size] += 1  # `kv.add_decode`, inlined (once per admitted request)
        kv.decoding += 1
        self.sum_cbase += cbase
        heapq.heappush(self.fin_heap, (req.output - req.ebase, req.idx, req.epoch, req))

    def _finish_decoded(self, t_end: float) -> None:
        heap, G = self.fin_heap, self.G
        kv = self.kv
        phase, block_size = kv.phase, kv.block_size
        while heap and heap[0][0] <= G:
            _, _, epoch, req = heapq.heappop(heap)
            if epoch != req.epoch:
                continue
            cbase = req.cbase
            req.computed = cbase + G
            req.emitted = req.ebase + G
            phase[cbase % block_size] -= 1  # `_leave_decode`, inlined (once per finished request)
            kv.decoding -= 1
            self.sum_cbase -= cbase
            req.decoding = False
            req.epoch += 1
            self._finish(req, t_end)

    def _finish(self, req: Request, t_end: float) -> None:
        done, kv, last_step = self.done, self.kv, self.G - 1
        del self.running[req.idx]
        client = self.client  # `client.close(t_end)`, inlined (once per finished request)
        client.outstanding -= 1
        if client.limit is not None:
            client.closed.append(t_end)
        kv.used -= -(-req.computed // kv.block_size)  # blocks_for(computed)
        a = req.adapter
        if self.active[a] > 1:  # `_deactivate` when other requests of the adapter still run, inlined
            self.active[a] -= 1
        else:
            self._deactivate(a, last_step)
        done.ttft.append(req.first_time - req.arrival)
        done.idx.append(req.idx)
        done.prompt_tokens += req.prompt
        done.output_tokens += req.output
        done.per_adapter[req.adapter] += 1
        if req.runs:  # runs before preemptions, then the last one (not stored in ``req.runs``: one per request)
            for start, end in req.runs:
                done.run_starts.append(start)
                done.run_ends.append(end)
        if last_step >= req.run_start:
            done.run_starts.append(req.run_start)
            done.run_ends.append(last_step)
        if req.special:
            done.special.extend(req.special)
        if self.check:
            gaps = sum(e - s + 1 for s, e in req.runs) + max(0, last_step - req.run_start + 1) + len(req.special)
            assert gaps == req.output - 1, f"request {req.idx}: {gaps} ITL gaps for {req.output} tokens"
            assert req.prefilled >= req.prompt, f"request {req.idx}: prefilled {req.prefilled} < {req.prompt}"

    def unfinished_per_adapter(self, until: float) -> list[int]:
        """Requests of each adapter still running or waiting at ``until`` (dropped by the benchmark)."""
        out = self.waiting.per_adapter(until)
        for req in self.running.values():
            out[req.adapter] += 1
        return out

    # ---- checking mode ---------------------------------------------------------------------------------------
    def _check_invariants(self, plan: StepPlan) -> None:
        """Invariants 3 and 4 of `engine`, checked after every scheduling decision in checking mode."""
        kv, bs = self.kv, self.kv.block_size
        chunk = {id(req): n for req, n in plan.prefills}
        held = 0
        for req in self.running.values():
            if req.decoding:
                held += blocks_for(req.cbase + self.G + 1, bs)
            else:
                held += blocks_for(req.computed + chunk.get(id(req), 0), bs)
        assert kv.used == held, f"KV accounting: {kv.used} blocks counted, {held} held"
        assert kv.used <= kv.capacity, f"KV cache over capacity: {kv.used} > {kv.capacity}"
        assert self.n_active <= self.max_loras, f"{self.n_active} adapters running > A_max {self.max_loras}"
        distinct = {r.adapter for r in self.running.values()}
        assert len(distinct) == self.n_active, "active-adapter count out of sync"
        assert len(self.running) <= self.max_seqs, f"{len(self.running)} running > max_num_seqs"
        client, waiting = self.client, self.waiting
        assert client.outstanding == len(self.running) + waiting.count()
        assert client.limit is None or client.outstanding + len(client.closed) <= client.limit
