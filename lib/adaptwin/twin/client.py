"""The benchmark client's connection limit: why saturated real runs stop growing their queue near 27k.

The by-time benchmark opens one TCP connection per request, from one Linux machine, to one server port.
Each connection holds an ephemeral port while the request is outstanding and for TIME_WAIT (60 s on Linux)
after the client closes it; the default range (net.ipv4.ip_local_port_range = 32768..60999) has 28,232
ports. When all are taken a new request fails at once ("Cannot assign requested address", which the
corpus's poller logs in 57 real runs) and is never counted. Every saturated real run indeed plateaus at
26,100..27,700 running + waiting requests (= 28,232 minus ~60 s of finished requests in TIME_WAIT), and
the plateau is what lets idle adapters in: once new requests of the active adapters fail, an active adapter
drains, and the next adapter brings its whole backlog into the batch. The twin models the machine, not any
run: a constant limit of ``max_connections`` ports and ``time_wait_s`` seconds, for every scenario
(``client: {max_connections: null}`` removes it).
"""

from __future__ import annotations

import bisect
from collections import deque

DEFAULT_MAX_CONNECTIONS = 28232
DEFAULT_TIME_WAIT_S = 60.0


class ConnectionLimit:
    """Ports held by outstanding requests and by recently closed connections."""

    def __init__(self, max_connections: int | None, time_wait_s: float) -> None:
        self.limit = max_connections
        self.time_wait_s = time_wait_s
        self.outstanding = 0
        self.closed: deque[float] = deque()  # close times still in TIME_WAIT

    def reject_windows(self, times, lo: int, hi: int) -> list[tuple[int, int]]:
        """Send arrivals ``lo`` .. ``hi - 1`` (sorted ``times``: a sequence of Python floats, e.g. a
        memoryview, all before any close still to come) and return the index ranges [start, end) that found
        no free port.

        Window by window: send while ports are free, else fail every arrival until the next TIME_WAIT ends
        (the TIME_WAIT deque is read in place: under a saturated client this runs once per finished request)."""
        closed, time_wait, limit = self.closed, self.time_wait_s, self.limit
        rejected = []
        i = lo
        while i < hi:
            horizon = times[i] - time_wait
            while closed and closed[0] <= horizon:
                closed.popleft()
            free = limit - self.outstanding - len(closed)
            if free > 0:
                sent = min(free, hi - i)
                self.outstanding += sent
                i += sent
                continue
            # first arrival at or after the next port release, searched in [i, hi) only (clamped there anyway)
            j = bisect.bisect_left(times, closed[0] + time_wait, i, hi) if closed else hi
            j = max(j, i + 1)
            rejected.append((i, j))
            i = j
        return rejected

    def close(self, t: float) -> None:
        """A request finished at ``t``: its port stays in TIME_WAIT."""
        self.outstanding -= 1
        if self.limit is not None:
            self.closed.append(t)
