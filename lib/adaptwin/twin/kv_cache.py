"""Paged KV cache (vLLM V1 ``KVCacheManager`` without prefix caching), counted in blocks.

A request that has computed ``c`` tokens holds ceil(c / block_size) blocks; scheduling ``n`` more tokens
allocates ceil((c + n) / block_size) - ceil(c / block_size) new blocks, and fails when fewer are free.

Decoding requests all advance one token per step. A decoding request with ``c`` computed tokens needs a new
block in the step where c is a multiple of the block size, so writing c = base + G (G = global step counter)
it needs one at every step G with (base + G) % block_size == 0. Counting decoding requests by
``base % block_size`` ("phase") gives the blocks any run of k steps needs in O(block_size), not O(batch).
"""

from __future__ import annotations

import bisect
import itertools


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks holding ``tokens`` tokens."""
    return -(-tokens // block_size)


class KVCache:
    """Block accounting of one server: capacity, blocks in use, and decode phases."""

    def __init__(self, capacity_blocks: int, block_size: int) -> None:
        self.capacity = capacity_blocks
        self.block_size = block_size
        self.used = 0
        self.phase = [0] * block_size
        self.decoding = 0

    @property
    def free(self) -> int:
        return self.capacity - self.used

    def add_decode(self, base: int) -> None:
        self.phase[base % self.block_size] += 1
        self.decoding += 1

    def remove_decode(self, base: int) -> None:
        self.phase[base % self.block_size] -= 1
        self.decoding -= 1

    def needs_block(self, base: int, step: int) -> bool:
        """Whether a decoding request of this ``base`` needs a new block at step ``step``."""
        return (base + step) % self.block_size == 0

    def decode_need(self, step: int) -> int:
        """New blocks all decoding requests need at step ``step``."""
        return self.phase[-step % self.block_size]

    def decode_need_steps(self, step: int, k: int) -> int:
        """New blocks the decoding requests need over steps ``step`` .. ``step + k - 1``."""
        bs = self.block_size
        full, rest = divmod(k, bs)
        total = full * self.decoding
        for j in range(rest):
            total += self.phase[-(step + j) % bs]
        return total

    def max_decode_steps(self, step: int, free: int) -> int:
        """Largest k such that steps ``step`` .. ``step + k - 1`` need at most ``free`` new blocks."""
        if self.decoding == 0:
            return 1 << 62
        bs = self.block_size
        cycles = free // self.decoding
        left = free - cycles * self.decoding
        # the next bs steps' needs are phase[r], phase[r - 1], ... (r = -step % bs, wrapping): the steps that
        # fit are those whose running total stays <= left (a C-level scan: this runs once per jump)
        r = -step % bs
        needs = self.phase[r::-1] + self.phase[:r:-1]
        return cycles * bs + bisect.bisect_right(list(itertools.accumulate(needs)), left)
