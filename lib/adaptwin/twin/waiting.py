"""vLLM's waiting queue, kept so that the LoRA-aware admission scan costs O(log n) per admission.

vLLM 0.8.5 V1 keeps one deque: new requests at the back, preempted ones pushed back at the front; the
scheduler scans it in order, skipping (and afterwards re-inserting, in order) the requests whose adapter is
not active while all A_max adapters are. A saturated server has a backlog of 10^5 requests, so rescanning it
every step is what made the authors' twin slow. This queue answers the same question directly:

* the queue order is a sequence number: the global arrival index for new requests (arrivals are sorted by
  time), decreasing negative numbers for preempted ones (each goes in front of everything);
* per adapter, the waiting requests are its preempted ones (a small deque, smallest sequence first) followed
  by a contiguous range of its arrivals, so arrivals cost nothing until admitted;
* two lazy heaps of each adapter's head sequence number - over all adapters, and over active adapters
  (those with a running request) - give the next request vLLM's scan would admit: the global head when
  fewer than A_max adapters run, else the first request of an active adapter. A head not yet arrived means
  no admissible request waits (its arrival time is then the next admission event);
* a Fenwick tree over admitted arrival indices gives any request's position in the queue, i.e. how many
  requests vLLM's scan examined (for the scheduler-time model).
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from typing import Any

import numpy as np


class WaitingQueue:
    """The waiting requests of one server (see module docstring)."""

    def __init__(self, times: np.ndarray, adapters: np.ndarray, n_adapters: int) -> None:
        self.times = times  # numpy: only the few admitted or peeked requests are ever looked up
        self.n = len(times)
        small = adapters.astype(np.int16) if n_adapters < 2**15 else adapters  # radix sort: O(n)
        order = np.argsort(small, kind="stable")
        same = small[order[1:]] == small[order[:-1]]
        nxt = np.full(self.n, self.n, dtype=np.int64)  # next arrival of the same adapter (n: none)
        nxt[order[:-1][same]] = order[1:][same]
        self.next_same = nxt
        first = np.full(n_adapters, self.n, dtype=np.int64)
        starts = order[np.flatnonzero(np.r_[True, ~same])] if self.n else order
        first[small[starts]] = starts  # each adapter's earliest arrival
        self.fresh_head: list[int] = first.tolist()  # adapter's first not-yet-admitted arrival (n: none)
        self.preempted: list[deque[Any]] = [deque() for _ in range(n_adapters)]
        self.preempted_seqs: list[int] = []
        self.front_seq = -1
        self.admitted_fresh = 0
        self.arrived = 0  # arrivals with time <= the last `count` time
        self._tree = [0] * (self.n + 1)
        self.heap_all = [(i, a) for a, i in enumerate(self.fresh_head) if i < self.n]
        heapq.heapify(self.heap_all)
        self.heap_active: list[tuple[int, int]] = []

    # ---- queries --------------------------------------------------------------------------------------------
    def head_seq(self, a: int) -> int | None:
        """Sequence number of adapter ``a``'s first waiting (or next arriving) request."""
        dq = self.preempted[a]
        if dq:
            return dq[0].seq
        i = self.fresh_head[a]
        return i if i < self.n else None

    def peek(self, active_only: bool, active: list[int]) -> tuple[int, int] | None:
        """(seq, adapter) of the first request the scan may admit, arrived or not; None if there is none."""
        heap = self.heap_active if active_only else self.heap_all
        while heap:
            seq, a = heap[0]
            if self.head_seq(a) == seq and (not active_only or active[a] > 0):
                return seq, a
            heapq.heappop(heap)
        return None

    def arrival_time(self, seq: int) -> float:
        """Arrival time of the request with sequence ``seq`` (preempted ones arrived long ago)."""
        return float(self.times[seq]) if seq >= 0 else float("-inf")

    def count(self, now: float) -> int:
        """Number of waiting requests at time ``now`` (non-decreasing ``now`` across calls)."""
        self.arrived = int(np.searchsorted(self.times, now, side="right"))
        return self.arrived - self.admitted_fresh + len(self.preempted_seqs)

    def rank(self, seq: int) -> int:
        """Number of waiting requests ahead of sequence ``seq`` in vLLM's queue order."""
        if seq < 0:
            return bisect.bisect_left(self.preempted_seqs, seq)
        return len(self.preempted_seqs) + seq - self._admitted_before(seq)

    def per_adapter(self, until: float) -> list[int]:
        """Waiting requests of each adapter at time ``until`` (walks the queue: for checks, not the hot path)."""
        out = []
        for a, head in enumerate(self.fresh_head):
            count, i = len(self.preempted[a]), head
            while i < self.n and self.times[i] < until:
                count, i = count + 1, int(self.next_same[i])
            out.append(count)
        return out

    # ---- updates --------------------------------------------------------------------------------------------
    def pop_head(self, a: int, active: bool) -> Any:
        """Remove adapter ``a``'s head: a preempted request object, or the int arrival index of a new one."""
        dq = self.preempted[a]
        if dq:
            req = dq.popleft()
            del self.preempted_seqs[bisect.bisect_left(self.preempted_seqs, req.seq)]
            out: Any = req
        else:
            out = self.fresh_head[a]
            self.fresh_head[a] = int(self.next_same[out])
            self.admitted_fresh += 1
            self._mark_admitted(out)
        self._push_head(a, active)
        return out

    def push_preempted(self, req: Any, a: int, active: bool) -> None:
        """Put a preempted request at the very front of the queue (vLLM: ``waiting.appendleft``)."""
        req.seq = self.front_seq
        self.front_seq -= 1
        self.preempted[a].appendleft(req)
        self.preempted_seqs.insert(0, req.seq)
        self._push_head(a, active)

    def activate(self, a: int) -> None:
        """Adapter ``a`` got a running request: its head becomes visible to the active-only scan."""
        seq = self.head_seq(a)
        if seq is not None:
            heapq.heappush(self.heap_active, (seq, a))

    def _push_head(self, a: int, active: bool) -> None:
        seq = self.head_seq(a)
        if seq is None:
            return
        heapq.heappush(self.heap_all, (seq, a))
        if active:
            heapq.heappush(self.heap_active, (seq, a))

    # ---- Fenwick tree of admitted arrival indices -------------------------------------------------------------
    def _mark_admitted(self, i: int) -> None:
        tree, n = self._tree, self.n
        i += 1
        while i <= n:
            tree[i] += 1
            i += i & -i

    def _admitted_before(self, i: int) -> int:
        tree, total = self._tree, 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total
