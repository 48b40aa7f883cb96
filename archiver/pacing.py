"""How often we may ask: the poll schedule, each API key's rate limit (in this process or shared
by every daemon through the state DB's rate slots), and Retry-After pauses."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import logging
import math
import random
import time
from collections import deque
from collections.abc import Collection, Mapping
from typing import Any, Protocol

import aiohttp

from archiver.errors import KeyRejected, ProviderUnavailable, RateLimited, StateUnavailable
from archiver.providers.base import Reply
from archiver.recorder import Recorder
from archiver.scrub import Redactor
from archiver.state.base import RateSlots

log = logging.getLogger(__name__)

JITTER = 0.1  # ±10% spreads tasks first seen together over time
MAX_RETRY_AFTER = 3600.0
MAX_ANSWER = 8 * 1024**2  # providers.NAME.max_answer's default: a poll answer past it is refused unread
SPACING_MARGIN = 1.05
SLOT_SPAN = 1.0  # a daemon reserves this many seconds of a key's shared slots per query (at least one slot)


def poll_delay(intervals: tuple[tuple[float, float], ...], age: float, rng: random.Random) -> float:
    """Seconds until the next poll of a task first seen `age` seconds ago."""
    every = next(e for e, until in intervals if age < until)
    return every * rng.uniform(1 - JITTER, 1 + JITTER)


class Bucket(Protocol):
    """Paces one API key's requests: in this process (TokenBucket) or across daemons (postgres)."""

    async def acquire(self) -> None: ...
    async def ready(self) -> None: ...
    def pause(self, seconds: float) -> None: ...


class TokenBucket:
    """At most `rate` requests in any one-second window; `pause` holds it longer.

    Requests are spaced evenly (no bursts), 5% wider than 1/rate, so that jitter in
    arrival at the provider never packs rate+1 of them into one second.
    """

    def __init__(self, rate: float) -> None:
        self.interval = SPACING_MARGIN / rate
        self.next_free = 0.0
        self.paused_until = 0.0
        self._lock = asyncio.Lock()

    def _start(self) -> float:
        return max(time.monotonic(), self.next_free, self.paused_until)

    async def acquire(self) -> None:
        async with self._lock:
            # A pause may arrive while we sleep (a 429 to a request in flight): look again.
            while (start := self._start()) > time.monotonic():
                await asyncio.sleep(start - time.monotonic())
            self.next_free = start + self.interval

    async def ready(self) -> None:
        """Wait until a request could go at once, without taking the token."""
        while (start := self._start()) > time.monotonic():
            await asyncio.sleep(start - time.monotonic())

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


def key_bucket(key_id: str, rate: float, slots: RateSlots | None) -> Bucket:
    """The bucket of one API key: shared through `slots` when daemons share the key, else in process."""
    return SharedBucket(slots, key_id, rate) if slots is not None else TokenBucket(rate)


class SharedBucket:
    """One key's pace across every daemon: requests take slots from a row in the state DB.

    Slots are spaced 1/rate (with the same margin as TokenBucket) on the database's clock. A
    daemon reserves SLOT_SPAN's worth of slots per query (a query per second, not per request)
    and uses each at its time; a slot whose time has passed is dropped, never used late, so no
    second ever holds more than the rate.
    """

    def __init__(self, slots: RateSlots, key_id: str, rate: float) -> None:
        self.state = slots
        self.key_id = key_id
        self.interval = SPACING_MARGIN / rate
        self.block = max(1, int(SLOT_SPAN / self.interval))
        self.paused_until = 0.0
        self.slots: deque[float] = deque()  # reserved, on this process's monotonic clock
        self._lock = asyncio.Lock()
        self._holds: set[asyncio.Task[None]] = set()

    async def acquire(self) -> None:
        async with self._lock:
            await self.ready()
            while self.slots and self.slots[0] < time.monotonic():
                self.slots.popleft()  # its moment passed unused
            if not self.slots:
                first = time.monotonic() + await self.state.reserve(self.key_id, self.interval, self.block)
                self.slots.extend(first + i * self.interval for i in range(self.block))
            if (wait := self.slots.popleft() - time.monotonic()) > 0:
                await asyncio.sleep(wait)

    async def ready(self) -> None:
        while (wait := self.paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold this daemon at once, and every other one through the slot row (best effort)."""
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)
        self.slots.clear()  # they fall inside the pause
        job = asyncio.get_running_loop().create_task(self._hold(seconds))
        self._holds.add(job)
        job.add_done_callback(self._holds.discard)

    async def _hold(self, seconds: float) -> None:
        with contextlib.suppress(StateUnavailable):  # this daemon pauses anyway; others learn from their 429
            await self.state.hold(self.key_id, seconds)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds, from either of its two forms; None for a value that is neither.

    A hint beyond an hour is held to an hour, so that one odd answer cannot stop an entry for good.
    """
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if parsed.tzinfo is None:  # RFC 9110 dates are GMT
            parsed = parsed.replace(tzinfo=dt.UTC)
        seconds = parsed.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


class ProviderHttp:
    """The paced `Http` for one provider entry (see providers.base.Http)."""

    def __init__(self, name: str, session: aiohttp.ClientSession, bucket: Bucket,
                 timeout: float = 30.0, recorder: Recorder | None = None, *,
                 redactor: Redactor | None = None, max_answer: int = MAX_ANSWER) -> None:
        self.name = name
        self.redactor = redactor or Redactor(())
        self.max_answer = max_answer
        self.recorder = recorder or Recorder()
        self.session = session
        self.bucket = bucket
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def __call__(self, method: str, url: str, *, headers: Mapping[str, str],
                       json: Any = None, accept: Collection[int] = ()) -> Reply:
        await self.bucket.acquire()
        started = time.monotonic()
        try:
            async with self.session.request(method, url, headers=dict(headers), json=json,
                                            timeout=self.timeout, allow_redirects=False) as resp:
                # The one door for provider answers: our secrets are gone before anything reads them.
                reply = Reply(resp.status, dict(resp.headers), self.redactor.bytes(await self._read(resp)))
        except (TimeoutError, aiohttp.ClientError) as e:
            raise ProviderUnavailable(self.redactor.text(f"{self.name}: {type(e).__name__}: {e}".rstrip(": "))) \
                from None
        finally:
            self.recorder.poll_took(self.name, time.monotonic() - started)
        if reply.status == 429 or (reply.status == 503 and "Retry-After" in reply.headers):
            wait = retry_after(reply.headers)
            raise RateLimited(f"{self.name}: HTTP {reply.status}, Retry-After {wait}", wait)
        if reply.status >= 500 and reply.status not in accept:
            raise ProviderUnavailable(f"{self.name}: HTTP {reply.status}")
        if reply.status == 401:
            raise KeyRejected(f"{self.name}: HTTP 401: the API key was refused")
        return reply

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, up to max_answer: a huge answer is refused before it is all in memory."""
        too_big = ProviderUnavailable(f"{self.name}: HTTP {resp.status}: the answer is over {self.max_answer} bytes "
                                      f"(providers.{self.name}.max_answer); not read")
        if (resp.content_length or 0) > self.max_answer:
            raise too_big
        body = bytearray()
        async for chunk in resp.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > self.max_answer:
                raise too_big
        return bytes(body)
