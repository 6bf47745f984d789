"""vLLM's waiting queue, kept so that the LoRA-aware admission scan costs O(log n) per admission.

vLLM 0.8.5 V1 keeps one deque: new requests at the back, preempted ones pushed back at the front; the
scheduler scans it in order, skipping (and afterwards re-inserting, in order) the requests whose adapter is
not active while all A_max adapters are. A saturated server has a backlog of 10^5 requests, so rescanning it
every step is what made the authors' twin slow. This queue answers the same question directly:

* the queue order is a sequence number: the global arrival index for new requests (arrivals are sorted by
  time), decreasing negative numbers for preempted ones (each goes in front of everything);
* per adapter, the waiting requests are its preempted ones (a small deque, smallest sequence first) followed
  by a contiguous range of its arrivals, so arrivals cost nothing until admitted;
* two lazy heaps of each adapter's head sequence number - over active adapters (those with a running
  request) and over idle ones - give the next request vLLM's scan would admit: the first request of an
  active adapter when all A_max adapters run, else the smaller of the two heaps' heads. An adapter's head
  is pushed into the heap of its current state only (one push per head change, not two); an entry is
  stale once the head or the state changed. Entries are single ints ``seq * n_adapters + adapter`` (the
  same order as (seq, adapter) pairs, negative seqs included), which heapq compares twice as fast as
  tuples. A head not yet arrived means no admissible request waits (its arrival time is then the next
  admission event);
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

ADMIT_BLOCK = 256  # arrivals per block of admitted flags (counted by bytearray.count within a block)
ADMIT_SUPER = 64  # blocks per super-block (block counts summed within one, super-block counts before it)


def scalar_view(values: np.ndarray) -> Any:
    """A sequence of ``values`` whose items are Python scalars (the same ones ``values.item(i)`` gives) and
    which `bisect` can search: a memoryview of a contiguous native numeric array (no copy), else a list."""
    if values.ndim == 1 and values.dtype.isnative and values.dtype.char in "dqlih":
        return memoryview(np.ascontiguousarray(values))
    return values.tolist()


class WaitingQueue:
    """The waiting requests of one server (see module docstring)."""

    def __init__(self, times: np.ndarray, adapters: np.ndarray, n_adapters: int) -> None:
        self.times = times  # numpy: only the few admitted or peeked requests are ever looked up
        self.time_at = scalar_view(times)  # the same, indexable and bisectable at C speed (no numpy scalars)
        self.n = len(times)
        small = adapters.astype(np.int16) if n_adapters < 2**15 else adapters  # radix sort: O(n)
        self.order = np.argsort(small, kind="stable")  # arrival indices grouped by adapter, ascending
        self.order_list = scalar_view(self.order)  # the same, for fast scalar reads (no copy)
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
        # arrivals the client failed to send: a flag per arrival, stored at the arrival's position in `order`
        # (what `_advance` searches; one store per rejected window, not two), and the same as disjoint index
        # ranges [start, end) in increasing order (for counting)
        self._rejected_by_position = bytearray(self.n)
        self._rejected_by_position_np = np.frombuffer(self._rejected_by_position, dtype=np.uint8)  # (a view)
        self.rej_starts: list[int] = []
        self.rej_ends: list[int] = []
        self.rej_before: list[int] = []  # rejected arrivals before each range
        self.n_rejected = 0
        self._admitted = bytearray(self.n)  # admitted flags, with counts per block and per super-block
        self._admitted_blocks = [0] * (self.n // ADMIT_BLOCK + 1)
        self._admitted_supers = [0] * (self.n // (ADMIT_BLOCK * ADMIT_SUPER) + 1)
        self.stride = n_adapters  # heap entry = seq * stride + adapter
        # no adapter runs yet: every head is idle
        self.heap_idle = [i * n_adapters + a for a, i in enumerate(self.fresh_head) if i < self.n]
        heapq.heapify(self.heap_idle)
        self.heap_active: list[int] = []

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
        top = self._top(self.heap_active, True, active)
        if active_only:
            return top
        idle = self._top(self.heap_idle, False, active)
        if top is None or (idle is not None and idle[0] < top[0]):
            return idle
        return top

    def _top(self, heap: list[int], in_batch: bool, active: list[int]) -> tuple[int, int] | None:
        """(seq, adapter) of the smallest valid entry of ``heap`` (adapters whose ``active[a] > 0`` equals
        ``in_batch``), stale entries popped and heads the client never sent skipped. (The hot path of a
        saturated server: `head_seq` is inlined and attributes are read once.)"""
        preempted, fresh_head, fresh_pos, stride = self.preempted, self.fresh_head, self.fresh_pos, self.stride
        rejected = self._rejected_by_position
        while heap:
            top = divmod(heap[0], stride)
            seq, a = top
            dq = preempted[a]
            if (dq[0].seq if dq else fresh_head[a]) == seq and (active[a] > 0) == in_batch:
                if seq < 0 or not rejected[fresh_pos[a]]:  # (a new request's head is at fresh_pos[a])
                    return top
                self._advance(a)  # the head was never sent: skip to the next one (a later seq, below the top)
                self._push_head(a, in_batch)
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

    @property
    def rejected(self) -> np.ndarray:
        """1 for each arrival the client failed to send, by arrival index (a copy)."""
        return self._rejected_by_position_np[self.position]

    def per_adapter(self, until: float) -> list[int]:
        """Waiting requests of each adapter at time ``until`` (walks the queue: for checks, not the hot path)."""
        out = []
        for a in range(len(self.fresh_head)):
            lo, hi = self.fresh_pos[a], self.bounds[a + 1]
            arrived = self.times[self.order[lo:hi]] < until
            sent = self._rejected_by_position_np[lo:hi][arrived] == 0
            out.append(len(self.preempted[a]) + int(sent.sum()))
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
            self._admitted[out] = 1  # flag + per-block and per-super-block counts (see `_admitted_before`)
            block = out // ADMIT_BLOCK
            self._admitted_blocks[block] += 1
            self._admitted_supers[block // ADMIT_SUPER] += 1
        self._push_head(a, active)
        return out

    def reject_range(self, start: int, end: int) -> None:
        """Arrivals ``start`` .. ``end - 1`` never reached the server (no client port). Heads among them are
        skipped lazily by `peek`."""
        if start >= end:
            return
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
        """Adapter ``a`` got a running request: its head moves to the active heap."""
        seq = self.head_seq(a)
        if seq is not None:
            heapq.heappush(self.heap_active, seq * self.stride + a)

    def deactivate(self, a: int) -> None:
        """Adapter ``a``'s last running request left: its head moves to the idle heap."""
        seq = self.head_seq(a)
        if seq is not None:
            heapq.heappush(self.heap_idle, seq * self.stride + a)

    def _push_head(self, a: int, active: bool) -> None:
        dq = self.preempted[a]
        seq = dq[0].seq if dq else self.fresh_head[a]  # (`head_seq`, inlined)
        if seq < self.n:
            heapq.heappush(self.heap_active if active else self.heap_idle, seq * self.stride + a)

    def _rejected_before(self, i: int) -> int:
        k = bisect.bisect_right(self.rej_starts, i) - 1
        if k < 0:
            return 0
        return self.rej_before[k] + min(i, self.rej_ends[k]) - self.rej_starts[k]

    # ---- admitted arrivals: flags plus two levels of counts (O(1) to mark in `pop_head`; counting reads at
    # most n / (ADMIT_BLOCK * ADMIT_SUPER) super-blocks, ADMIT_SUPER blocks and ADMIT_BLOCK flags) ----------
    def _admitted_before(self, i: int) -> int:
        block = i // ADMIT_BLOCK
        sup = block // ADMIT_SUPER
        return (sum(self._admitted_supers[:sup]) + sum(self._admitted_blocks[sup * ADMIT_SUPER:block])
                + self._admitted.count(1, block * ADMIT_BLOCK, i))
