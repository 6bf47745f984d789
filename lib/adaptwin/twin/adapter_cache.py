"""GPU adapter slots, managed LRU as vLLM's ``LRUCacheWorkerLoRAManager`` does.

Every served adapter is held in CPU memory (``max_cpu_loras`` >= served, so no disk loads while serving);
A_max GPU slots hold the adapters the batch can use. Each step vLLM activates the batch's adapters: one not
in a slot is copied CPU -> GPU (``swap_time(rank, S_max)``: the copy plus the calibration's swap cost, added
to that step) into a free slot or over the least recently used adapter that is not in the batch. Start-up: the server activates every registered
adapter once, in order, so the slots start with the last A_max adapters (the lowest index is the LRU one).

Adapters with running requests are used every step, so only inactive ones can be evicted; their recency
is the step at which their last request left the batch, kept in a lazy heap (cost O(log n) per load).

Reloads: vLLM activates the batch's adapters one by one, in the iteration order of a Python set of
requests (a fixed pseudo-random order, the adapter name's hash), touching each in the slots' LRU, and
evicts the LRU slot whenever one is missing. When every slot held an adapter of the previous step's
batch, the LRU entry can be a batch adapter that this step has not touched yet: it is evicted, then
reloaded when its turn comes, evicting the next one, until the chain reaches the adapter that left.
The slots end with the same contents, but each link is one more CPU -> GPU copy in the step (the 5.5
tables: 99 of 664 runs with served > A_max count more loads than
finished requests, up to 6.8 per request). ``order`` is that iteration order.
"""

from __future__ import annotations

import heapq

import numpy as np


class GpuSlots:
    """A_max LRU slots over ``served`` adapters."""

    def __init__(self, capacity: int, served: int, seed: int = 0, order: list[int] | None = None) -> None:
        self.capacity = capacity
        self.in_slot = bytearray(served)
        self.last_used = [0] * served
        self.order = list(order) if order is not None else np.random.default_rng(seed).permutation(served).tolist()
        self.by_place = sorted(range(served), key=self.order.__getitem__)  # adapters in visiting order
        self.loaded_at = [-1] * served  # step whose activation loaded the adapter
        self.joined_at = [-1] * served  # step at which the adapter last joined the batch
        self.joined_step, self.joined_now = -1, []  # the adapters that joined the batch at step joined_step
        self._heap: list[tuple[int, int, int]] = []
        first = served - capacity
        for j, a in enumerate(range(first, served)):
            self.in_slot[a] = 1
            self.last_used[a] = j - capacity  # before any step; lowest index least recent
            self._heap.append((self.last_used[a], self.order[a], a))
        heapq.heapify(self._heap)
        self.used = capacity
        self.reloaded: list[int] = []  # batch adapters the last `activate` evicted and copied back

    def activate(self, a: int, active: list[int], step: int = 0) -> bool:
        """Make adapter ``a`` resident when it joins the batch of step ``step``; True when that needed a
        CPU -> GPU load.

        ``active[b]`` > 0 marks adapters in the batch (they end resident); ``reloaded`` lists the batch
        adapters the load evicted and copied back in the same step (see the module docstring)."""
        self.reloaded = []
        self.joined_at[a] = step
        if step != self.joined_step:
            self.joined_step, self.joined_now = step, []
        self.joined_now.append(a)
        if self.in_slot[a]:
            return False
        if self.used < self.capacity:
            self.used += 1
        else:
            heap = self._heap
            while True:
                key, place, b = heapq.heappop(heap)
                if self.in_slot[b] and active[b] == 0 and self.last_used[b] == key:
                    self.in_slot[b] = 0
                    victim = (key, place)
                    break
            self.reloaded = self._chain(a, victim, active, step)
        self.in_slot[a] = 1
        self.loaded_at[a] = step
        return True

    def _chain(self, a: int, victim: tuple[int, int], active: list[int], step: int) -> list[int]:
        """Batch adapters vLLM evicts (and copies back at their turn) before it reaches ``victim``.

        At each load the LRU entry among the adapters not yet touched this step is evicted: the batch
        adapters later in the visiting order (recency: the previous step if they were in its batch, else
        their last use) and the idle ones (the oldest of which is ``victim``, as (recency, order)).

        Walked literally, each eviction is the oldest entry after the previous one, until that is ``victim``:
        the entries older than every entry after them, left to right, as long as they are older than
        ``victim``. So only entries older than ``victim`` are looked at: adapters in the previous step's
        batch (recency step - 1) only when the victim left at step - 1 too and comes later in the visiting
        order (a range of `by_place`), and those that joined at this step (`joined_now`, a few). One pass
        from the right then finds the chain (one short scan per load, not one over every adapter per link).
        Steps never go back, so no adapter joined after ``step`` and no recency exceeds step - 1."""
        order, in_slot, loaded_at = self.order, self.in_slot, self.loaded_at
        joined_at, last_used = self.joined_at, self.last_used
        start = order[a] + 1
        if victim[0] < step - 1:  # the previous step's batch is newer than the victim: none of it counts
            end = start
        elif victim[0] == step - 1:
            end = max(start, victim[1] + 1)
        else:  # (not in a run: recencies are at most step - 1)
            end = len(order)
        candidates = self.by_place[start:end]
        if self.joined_step == step:
            candidates += sorted({b for b in self.joined_now if order[b] >= end}, key=order.__getitem__)
        later = []  # (recency, place) of the untouched batch adapters older than the victim, in visiting order
        for b in candidates:
            if active[b] and in_slot[b] and loaded_at[b] < step:
                entry = (step - 1 if joined_at[b] < step else last_used[b], order[b])
                if entry <= victim:
                    later.append((entry, b))
        chain, oldest_after = [], None
        for entry, b in reversed(later):
            if oldest_after is None or entry < oldest_after:
                oldest_after = entry
                chain.append(b)
        chain.reverse()
        return chain

    def release(self, a: int, step: int) -> None:
        """Adapter ``a`` left the batch after step ``step``: it becomes evictable with that recency."""
        self.last_used[a] = step
        heapq.heappush(self._heap, (step, self.order[a], a))
