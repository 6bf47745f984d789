"""GPU adapter slots, managed LRU as vLLM's ``LRUCacheWorkerLoRAManager`` does.

Every served adapter is held in CPU memory (``max_cpu_loras`` >= served, so no disk loads while serving);
A_max GPU slots hold the adapters the batch can use. Each step vLLM activates the batch's adapters: one not
in a slot is copied CPU -> GPU (``load_time(rank, S_max)``, added to that step) into a free slot or over the
least recently used adapter that is not in the batch. Start-up: the server activates every registered
adapter once, in order, so the slots start with the last A_max adapters (the lowest index is the LRU one).

Adapters with running requests are used every step, so only inactive ones can be evicted; their recency
is the step at which their last request left the batch, kept in a lazy heap (cost O(log n) per load).
"""

from __future__ import annotations

import heapq


class GpuSlots:
    """A_max LRU slots over ``served`` adapters."""

    def __init__(self, capacity: int, served: int) -> None:
        self.capacity = capacity
        self.in_slot = bytearray(served)
        self.last_used = [0] * served
        self._heap: list[tuple[int, int]] = []
        first = served - capacity
        for j, a in enumerate(range(first, served)):
            self.in_slot[a] = 1
            self.last_used[a] = j - capacity  # before any step; lowest index least recent
            self._heap.append((self.last_used[a], a))
        heapq.heapify(self._heap)
        self.used = capacity

    def activate(self, a: int, active: list[int]) -> bool:
        """Make adapter ``a`` resident; True when that needed a CPU -> GPU load.

        ``active[b]`` > 0 marks adapters in the batch (never evicted)."""
        if self.in_slot[a]:
            return False
        if self.used < self.capacity:
            self.used += 1
        else:
            heap = self._heap
            while True:
                key, b = heapq.heappop(heap)
                if self.in_slot[b] and active[b] == 0 and self.last_used[b] == key:
                    self.in_slot[b] = 0
                    break
        self.in_slot[a] = 1
        return True

    def release(self, a: int, step: int) -> None:
        """Adapter ``a`` left the batch after step ``step``: it becomes evictable with that recency."""
        self.last_used[a] = step
        heapq.heappush(self._heap, (step, a))
