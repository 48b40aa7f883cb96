"""The rate check of the end-to-end tests (tests/support/rates.py) passes the real token
bucket with arrival jitter, and catches a burst of twice the rate.

Arrival jitter is random: the test prints its seed; ARCHIVER_RATE_SEED=<seed> replays it.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from archiver.pacing import SPACING_MARGIN, TokenBucket
from tests.support.rates import JITTER, over_rate


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("ARCHIVER_RATE_SEED") or random.randrange(2**32))
    print(f"rate check seed {seed} (replay with ARCHIVER_RATE_SEED={seed})")
    return random.Random(seed)


def arrivals(sent: list[float], rng: random.Random) -> list[float]:
    """Each request arrives after its own delay, which varies by up to JITTER."""
    return [at + rng.uniform(0.0, JITTER) for at in sent]


@pytest.mark.parametrize("rate", [1.0, 5.0, 10.0])
def test_the_bucket_spacing_passes_with_any_jitter(rate: float, rng: random.Random) -> None:
    sent = [n * SPACING_MARGIN / rate for n in range(int(30 * rate))]
    for _ in range(20):
        assert over_rate(arrivals(sent, rng), rate) is None


@pytest.mark.parametrize("rate", [1.0, 5.0, 10.0])
def test_twice_the_rate_is_caught(rate: float, rng: random.Random) -> None:
    sent = [n / (2 * rate) for n in range(int(30 * rate))]
    assert over_rate(arrivals(sent, rng), rate) is not None
    # Twice the rate for only six seconds, then nothing: still caught.
    assert over_rate([n / (2 * rate) for n in range(int(12 * rate))], rate) is not None


@pytest.mark.parametrize("rate", [1.0, 10.0])
def test_a_short_burst_on_a_steady_stream_is_caught(rate: float) -> None:
    steady = [n * SPACING_MARGIN / rate for n in range(int(20 * rate))]
    burst = [10.0 + n * 0.01 for n in range(int(rate) + 2)]  # rate + 2 extra within 1/10 s
    assert over_rate(steady, rate) is None
    assert over_rate(steady + burst, rate) is not None


async def test_the_real_bucket_passes() -> None:
    bucket, times = TokenBucket(40.0), []
    for _ in range(60):
        await bucket.acquire()
        times.append(time.monotonic())
    assert over_rate(times, 40.0) is None
