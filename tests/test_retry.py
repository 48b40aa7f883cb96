"""archiver.retry: the one backoff, as a schedule (`delay`) and as tenacity's wait and loop."""

from __future__ import annotations

import time

import pytest
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from archiver.errors import DownloadInterrupted, PermanentError, TransientError
from archiver.retry import Backoff


def after(error: BaseException, attempt: int) -> RetryCallState:
    """The state tenacity hands its wait after try number `attempt` failed with `error`."""
    state = RetryCallState(AsyncRetrying(), None, (), {})
    state.attempt_number = attempt
    state.set_exception((type(error), error, None))
    return state


def test_delay_doubles_from_first_up_to_most_plus_jitter() -> None:
    backoff = Backoff(first=1.0, most=60.0, jitter=1.0)
    for failures, grown in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0)]:
        for _ in range(20):
            assert grown <= backoff.delay(failures) <= grown + 1.0


def test_a_long_outage_does_not_overflow() -> None:
    assert 60.0 <= Backoff(first=1.0, most=60.0).delay(100_000) <= 61.0


def test_wait_is_the_delay_held_to_most() -> None:
    backoff = Backoff(first=0.5, most=2.0, jitter=1.0)
    assert 0.5 <= backoff.wait(after(DownloadInterrupted("reset"), 1)) <= 1.5
    assert backoff.wait(after(DownloadInterrupted("reset"), 5)) == 2.0


def test_wait_honours_retry_after_up_to_most() -> None:
    backoff = Backoff(first=0.5, most=30.0)
    assert backoff.wait(after(DownloadInterrupted("429", retry_after=7.0), 1)) == 7.0
    assert backoff.wait(after(DownloadInterrupted("429", retry_after=0.0), 3)) == 0.0
    assert backoff.wait(after(DownloadInterrupted("429", retry_after=600.0), 1)) == 30.0


async def test_retrying_stops_after_attempts_and_raises_the_last_error() -> None:
    tries = 0
    with pytest.raises(DownloadInterrupted, match="try 3"):
        async for attempt in Backoff(first=0.0, most=0.0, jitter=0.0).retrying(
                retry_if_exception_type(TransientError), 3):
            with attempt:
                tries += 1
                raise DownloadInterrupted(f"try {tries}")
    assert tries == 3


async def test_retrying_raises_an_error_it_does_not_retry_at_once() -> None:
    tries = 0
    started = time.monotonic()
    with pytest.raises(PermanentError):
        async for attempt in Backoff(first=5.0, most=5.0).retrying(retry_if_exception_type(TransientError), 3):
            with attempt:
                tries += 1
                raise PermanentError("no")
    assert tries == 1 and time.monotonic() - started < 1.0
