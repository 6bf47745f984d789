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
* counts of admitted arrivals per block of indices give any request's position in the queue, i.e. how many
  requests vLLM's scan examined (for the scheduler-time model);
* arrivals the client could not send (`client`) are kept as index ranges, skipped when they reach the head.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from typing import Any

import numpy as np

ADMIT_BLOCK = 4096


class WaitingQueue:
    """The waiting requests of one server (see module docstring)."""

    def __init__(self, times: np.ndarray, adapters: np.ndarray, n_adapters: int) -> None:
        self.times = times  # numpy: only the few admitted or peeked requests are ever looked up
        self.adapters = adapters
        self.n = len(times)
        small = adapters.astype(np.int16) if n_adapters < 2**15 else adapters  # radix sort: O(n)
        self.order = np.argsort(small, kind="stable")  # arrival indices grouped by adapter, ascending
        self.order_list: list[int] = self.order.tolist()  # the same, for fast scalar reads
        self.position = np.empty(self.n, dtype=np.int64)  # inverse of `order`
        self.position[self.order] = np.arange(self.n)
        self.bounds = np.searchsorted(small[self.order], np.arange(n_adapters + 1)).tolist()
        first = [int(self.order[b]) if b < e else self.n for b, e in zip(self.bounds[:-1], self.bounds[1:], strict=True)]
        self.fresh_head: list[int] = first  # adapter's first arrival not yet admitted (n: none)
        self.fresh_pos = list(self.bounds[:-1])  # position of fresh_head in `order`
        self.preempted: list[deque[Any]] = [deque() for _ in range(n_adapters)]
        self.preempted_seqs: list[int] = []
        self.front_seq = -1
        self.admitted_fresh = 0
        self.ingested = 0  # arrivals whose fate (sent or rejected by the client) is decided
        self.next_time = float(times[0]) if self.n else float("inf")  # arrival time of `ingested`
        # arrivals the client failed to send: a flag per arrival, and the same as disjoint index ranges
        # [start, end) in increasing order (for counting)
        self._rejected_bytes = bytearray(self.n)
        self.rejected = np.frombuffer(self._rejected_bytes, dtype=np.uint8)  # numpy view of the same flags
        self._rejected_by_position = bytearray(self.n)  # the same flags in `order`'s positions
        self._rejected_by_position_np = np.frombuffer(self._rejected_by_position, dtype=np.uint8)  # (a view)
        self.rej_starts: list[int] = []
        self.rej_ends: list[int] = []
        self.rej_before: list[int] = []  # rejected arrivals before each range
        self.n_rejected = 0
        self._admitted = bytearray(self.n)  # admitted flags, with counts per block of ADMIT_BLOCK arrivals
        self._admitted_blocks = [0] * (self.n // ADMIT_BLOCK + 1)
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
        """(seq, adapter) of the first request the scan may admit, arrived or not; None if there is none.

        (The hot path of a saturated server: `head_seq` is inlined and attributes are read once.)"""
        heap = self.heap_active if active_only else self.heap_all
        preempted, fresh_head, rejected = self.preempted, self.fresh_head, self._rejected_bytes
        while heap:
            seq, a = heap[0]
            dq = preempted[a]
            if (dq[0].seq if dq else fresh_head[a]) == seq and (not active_only or active[a] > 0):
                if seq < 0 or not rejected[seq]:
                    return seq, a
                self._advance(a)  # the head was never sent: skip to the next one
                self._push_head(a, active[a] > 0)
            heapq.heappop(heap)
        return None

    def count(self) -> int:
        """Number of waiting requests now (the caller ingested the arrivals up to now)."""
        return self.ingested - self.admitted_fresh - self.n_rejected + len(self.preempted_seqs)

    def rank(self, seq: int) -> int:
        """Number of waiting requests ahead of sequence ``seq`` in vLLM's queue order."""
        if seq < 0:
            return bisect.bisect_left(self.preempted_seqs, seq)
        return len(self.preempted_seqs) + seq - self._admitted_before(seq) - self._rejected_before(seq)

    def per_adapter(self, until: float) -> list[int]:
        """Waiting requests of each adapter at time ``until`` (walks the queue: for checks, not the hot path)."""
        out = []
        for a in range(len(self.fresh_head)):
            fresh = self.order[self.fresh_pos[a]:self.bounds[a + 1]]
            fresh = fresh[self.times[fresh] < until]
            out.append(len(self.preempted[a]) + int((self.rejected[fresh] == 0).sum()))
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
            self._advance(a)
            self.admitted_fresh += 1
            self._admitted[out] = 1  # flag + per-block count (see `_admitted_before`)
            self._admitted_blocks[out // ADMIT_BLOCK] += 1
        self._push_head(a, active)
        return out

    def reject_range(self, start: int, end: int) -> None:
        """Arrivals ``start`` .. ``end - 1`` never reached the server (no client port). Heads among them are
        skipped lazily by `peek`."""
        if start >= end:
            return
        self._rejected_bytes[start:end] = b"\x01" * (end - start)
        self._rejected_by_position_np[self.position[start:end]] = 1
        if self.rej_ends and self.rej_ends[-1] == start:
            self.rej_ends[-1] = end
        else:
            self.rej_starts.append(start)
            self.rej_ends.append(end)
            self.rej_before.append(self.n_rejected)
        self.n_rejected += end - start

    def _advance(self, a: int) -> None:
        """Move adapter ``a``'s fresh head to its next arrival that was not rejected (a byte search over the
        adapter's arrivals: under a saturated client most arrivals fail)."""
        end = self.bounds[a + 1]
        start = self.fresh_pos[a] + 1
        pos = self._rejected_by_position.find(0, start, end) if start < end else -1
        if pos < 0:
            self.fresh_pos[a], self.fresh_head[a] = end, self.n
        else:
            self.fresh_pos[a], self.fresh_head[a] = pos, self.order_list[pos]

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
        dq = self.preempted[a]
        seq = dq[0].seq if dq else self.fresh_head[a]  # (`head_seq`, inlined)
        if seq >= self.n:
            return
        entry = (seq, a)
        heapq.heappush(self.heap_all, entry)
        if active:
            heapq.heappush(self.heap_active, entry)

    def _rejected_before(self, i: int) -> int:
        k = bisect.bisect_right(self.rej_starts, i) - 1
        if k < 0:
            return 0
        return self.rej_before[k] + min(i, self.rej_ends[k]) - self.rej_starts[k]

    # ---- admitted arrivals: flags plus per-block counts (O(1) to mark in `pop_head`, O(n / block) to count) --
    def _admitted_before(self, i: int) -> int:
        block = i // ADMIT_BLOCK
        return sum(self._admitted_blocks[:block]) + self._admitted.count(1, block * ADMIT_BLOCK, i)
