"""Service-time samples of a cell: a bounded buffer and nearest-rank percentiles.

Pure: no clock, no I/O. The runtime measures a sampled call's duration (in
nanoseconds) and :meth:`ServiceTimes.record` keeps it; once per report
interval :meth:`ServiceTimes.take` turns the interval's samples into p50 and
p99 in microseconds and starts a new interval. The buffer is a ring of at
most ``capacity`` samples, so memory stays bounded even when nobody takes
the samples (a cell run without a root).

Every sample is also counted in one bucket of :data:`RTT_BUCKETS_US` (and
its duration added to a sum); :meth:`ServiceTimes.take_histogram` hands the
interval's counts over for the root's Prometheus histogram
(``cellmesh_cell_call_duration_seconds``) and starts over.
"""

from __future__ import annotations

import bisect
import math
from typing import Final

#: Measure one message in this many (a counter check per message otherwise).
DEFAULT_SAMPLE_EVERY: Final = 16
#: At most this many samples are kept per interval (newest win).
DEFAULT_CAPACITY: Final = 4096
#: Upper bounds (microseconds) of the service-time histogram's buckets; one
#: more bucket counts what is above the last bound.
RTT_BUCKETS_US: Final[tuple[int, ...]] = (
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
)
_BOUNDS_NS: Final = tuple(b * 1000 for b in RTT_BUCKETS_US)


def percentile(sorted_values: list[int], fraction: float) -> int:
    """Nearest-rank percentile of a non-empty ascending list (``fraction`` in (0, 1])."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class ServiceTimes:
    """Durations (ns) of sampled calls over the current report interval."""

    __slots__ = ("_buckets", "_capacity", "_next", "_samples", "_sum_ns")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self._capacity = capacity
        self._samples: list[int] = []
        self._next = 0
        self._buckets = [0] * (len(RTT_BUCKETS_US) + 1)
        self._sum_ns = 0

    def record(self, duration_ns: int) -> None:
        """Keep one sample; past ``capacity`` the oldest of the interval is replaced.

        Every sample is counted in the histogram, kept or not.
        """
        self._buckets[bisect.bisect_left(_BOUNDS_NS, duration_ns)] += 1
        self._sum_ns += duration_ns
        samples = self._samples
        if len(samples) < self._capacity:
            samples.append(duration_ns)
        else:
            samples[self._next] = duration_ns
            self._next = (self._next + 1) % self._capacity

    def __len__(self) -> int:
        return len(self._samples)

    def take(self) -> tuple[float | None, float | None]:
        """``(p50_us, p99_us)`` of the interval (None, None when empty); then reset."""
        samples, self._samples, self._next = self._samples, [], 0
        if not samples:
            return None, None
        samples.sort()
        return percentile(samples, 0.50) / 1000.0, percentile(samples, 0.99) / 1000.0


    def take_histogram(self) -> tuple[tuple[int, ...], float]:
        """The interval's bucket counts (``len(RTT_BUCKETS_US) + 1``, not cumulative) and
        the sum of its samples in microseconds; then reset."""
        counts, self._buckets = tuple(self._buckets), [0] * len(self._buckets)
        total, self._sum_ns = self._sum_ns, 0
        return counts, total / 1000.0


__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_SAMPLE_EVERY",
    "RTT_BUCKETS_US",
    "ServiceTimes",
    "percentile",
]
