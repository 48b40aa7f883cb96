"""Check request times seen at a fake server against what the token bucket promises.

The bucket (archiver/pacing.py) spaces requests SPACING_MARGIN/rate apart, so any window
of W seconds holds at most floor(W·rate/margin) + 1 sent requests. Arrival at the fake is
later by a delay that varies (a loaded machine stalls either event loop); delays that vary
by up to `jitter` make W seconds of arrivals come from at most W + jitter seconds of sending.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from archiver.pacing import SPACING_MARGIN

JITTER = 0.5  # seconds by which arrival delays may differ on a loaded 2-core machine
WINDOWS = (1.0, 10.0)  # a short window catches bursts, a long one a steady excess


def max_in_window(times: Iterable[float], window: float) -> int:
    """The most requests whose times fall in any half-open window [t, t + window)."""
    ordered = sorted(times)
    best, end = 0, 0
    for start, at in enumerate(ordered):
        while end < len(ordered) and ordered[end] < at + window:
            end += 1
        best = max(best, end - start)
    return best


def promised(rate: float, window: float, jitter: float = JITTER) -> int:
    """The most arrivals in `window` seconds that a bucket of `rate` can explain."""
    return math.floor((window + jitter) * rate / SPACING_MARGIN) + 1


def over_rate(times: list[float], rate: float) -> str | None:
    """None if `times` keep to `rate`; else which window held too many requests."""
    for window in WINDOWS:
        seen, allowed = max_in_window(times, window), promised(rate, window)
        if seen > allowed:
            return f"{seen} requests in {window:g}s, the limiter allows at most {allowed}"
    return None
