"""The one retry policy: exponential backoff with jitter, a server's Retry-After honoured, a cap, N tries.

Downloads (download.py) and S3's 409 conflicts (storage/s3.py; botocore retries S3's other
failures itself, in standard mode) retry a call with `Backoff.retrying`, on tenacity. The
poller's pause after failed polls is a schedule (when to ask next), not a loop around one call,
so it takes the same formula from `Backoff.delay`. The Retry-After header itself
is read where the answer arrives (pacing.retry_after) and travels as `TransientError.retry_after`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_base, stop_after_attempt

from archiver.errors import TransientError


@dataclass(frozen=True)
class Backoff:
    """`first` seconds after the first failure, doubling up to `most`, plus up to `jitter` seconds at random."""

    first: float
    most: float
    jitter: float = 1.0

    def delay(self, failures: int) -> float:
        """The wait after `failures` failures in a row (1, 2, …): a plain function of the count."""
        try:
            grown = min(self.most, self.first * 2.0 ** (failures - 1))
        except OverflowError:  # a long outage counts thousands of failures
            grown = self.most
        return grown + random.uniform(0, self.jitter)

    def wait(self, state: RetryCallState) -> float:
        """tenacity's wait: the last error's Retry-After hint if it has one, else `delay`; in a retry
        loop no wait is over `most`, since the call it retries is held open meanwhile."""
        error = state.outcome.exception() if state.outcome else None
        hinted = error.retry_after if isinstance(error, TransientError) else None
        return min(self.most, hinted if hinted is not None else self.delay(state.attempt_number))

    def retrying(self, retry: retry_base, attempts: int) -> AsyncRetrying:
        """Up to `attempts` tries of a call while `retry` says so; the last error is raised as it was.

        Use: `async for attempt in backoff.retrying(...): with attempt: return await call()`."""
        return AsyncRetrying(retry=retry, stop=stop_after_attempt(attempts), wait=self.wait, reraise=True)
