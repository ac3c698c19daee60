"""Summary statistics for benchmark samples: median and nearest-rank percentiles.

Pure functions over sequences of floats; no I/O, no clocks. The percentile is
the *nearest-rank* definition (the smallest sample such that at least ``q``
percent of the samples are <= it), so p99 of 100 samples is the 99th smallest
and every reported value is a sample that was actually observed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["median", "percentile"]


def median(values: Sequence[float]) -> float:
    """Return the median of ``values`` (mean of the middle two for even length).

    Raises :class:`ValueError` on an empty sequence.
    """
    if not values:
        raise ValueError("median of an empty sequence")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def percentile(values: Sequence[float], q: float) -> float:
    """Return the nearest-rank ``q``-th percentile of ``values`` (``0 < q <= 100``).

    Raises :class:`ValueError` on an empty sequence or a ``q`` out of range.
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 < q <= 100.0:
        raise ValueError(f"percentile q must be in (0, 100], got {q}")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])
