"""One provider entry's poller: a heap of due tasks, served in batches within the rate limit.

The cost of a tick does not grow with the number of waiting tasks: the heap yields the
due ones, and a task that is not due is never looked at.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import RetryCallState
from tenacity.wait import wait_exponential, wait_random

from archiver.config import ProviderEntry
from archiver.errors import KeyRejected, LeaseLost, RateLimited, StateUnavailable, TransientError
from archiver.model import Phase, TaskStatus
from archiver.pacing import ProviderHttp, poll_delay
from archiver.providers.base import Provider
from archiver.recorder import Recorder
from archiver.state import Asset, State, Task

log = logging.getLogger(__name__)

UNAUTHORISED_PAUSE = 60.0  # a rejected key is retried once a minute until it works
STATE_DOWN_PAUSE = 5.0  # polling waits this long while the state DB does not answer
_backoff = wait_exponential(multiplier=1, max=60) + wait_random(0, 1)


EMPTY_SUCCESS_POLLS = 3  # a success without URLs is asked about this many more times...
EMPTY_SUCCESS_WAIT = 60.0  # ...over at least this many seconds, since URLs can lag a success


@dataclass
class Tracked:
    task_id: str
    first_seen_at: float
    unknown_since: float | None
    running_for: float = 0.0  # seconds the provider has answered "still running"
    answered_at: float | None = None  # the last such answer, with no failed poll since
    empty_successes: int = 0
    empty_since: float | None = None


OnSuccess = Callable[[Task, list[Asset]], None]
OnFailed = Callable[[Task], Awaitable[None]]


class EntryPoller:
    """Polls every live task of one provider entry."""

    def __init__(self, entry: ProviderEntry, provider: Provider, http: ProviderHttp, state: State,
                 on_success: OnSuccess, on_failed: OnFailed, rng: random.Random,
                 recorder: Recorder | None = None) -> None:
        self.entry = entry
        self.provider = provider
        self.http = http
        self.state = state
        self.on_success = on_success
        self.on_failed = on_failed
        self.rng = rng
        self.recorder = recorder or Recorder()
        self.heap: list[tuple[float, int, int]] = []
        self.tracked: dict[int, Tracked] = {}
        self.seq = itertools.count()
        self.wake = asyncio.Event()
        self.failures = 0
        self.unauthorised = False
        in_flight = max(2, min(32, int(entry.requests_per_second * 2)))
        self.slots = asyncio.Semaphore(in_flight)
        self.running: set[asyncio.Task[None]] = set()
        self.busy: set[int] = set()  # tasks with a poll in flight
        self.current: dict[int, int] = {}  # pk → seq of its one live heap entry; older ones are stale
        self.hinted: set[int] = set()  # a callback asked for a fresh answer; no poll has started since
        self.serving: set[int] = set()  # hinted tasks whose poll is in flight

    def add(self, task: Task, due: float | None = None) -> None:
        if task.pk in self.tracked:
            return
        self.tracked[task.pk] = Tracked(task.task_id, task.first_seen_at, task.unknown_since, task.running_for)
        self._schedule(task.pk, time.time() if due is None else due)

    def poll_now(self, pk: int) -> bool:
        """Poll this task at once (a provider's callback said it ended); False if it is not ours now.

        A poll already in flight may have left the provider before the task ended: the task is
        then asked once more right after it. A hinted poll refused by a 429 or 5xx is asked
        again when the pause ends, not at the task's next scheduled time.
        """
        if pk not in self.tracked:
            return False
        self.hinted.add(pk)
        if pk not in self.busy:
            self._schedule(pk, time.time())
        return True

    def _schedule(self, pk: int, due: float) -> None:
        seq = next(self.seq)
        self.current[pk] = seq
        heapq.heappush(self.heap, (due, seq, pk))
        self.wake.set()

    def _later(self, pk: int, delay: float | None = None) -> None:
        tracked = self.tracked[pk]
        age = time.time() - tracked.first_seen_at
        normal = 0.0 if pk in self.hinted else poll_delay(self.entry.poll_intervals, age, self.rng)
        # A provider may cap queries per task (kie's 4o Image and Suno: 3 a second).
        normal = max(normal, getattr(self.provider, "min_poll_interval", 0.0))
        self._schedule(pk, time.time() + max(normal, delay or 0.0))

    async def run(self) -> None:
        while True:
            await self._due()
            await self.slots.acquire()
            # Take the batch only when a request could go now, so a batching provider
            # (acedata) collects every task that fell due while we waited for the token.
            await self.http.bucket.ready()
            batch = self._take_due()
            if not batch:
                self.slots.release()
                continue
            job = asyncio.create_task(self._poll(batch))
            self.running.add(job)
            job.add_done_callback(self.running.discard)

    async def _due(self) -> None:
        """Return once the earliest scheduled poll is due."""
        while not self.heap or self.heap[0][0] > time.time():
            self.wake.clear()
            timeout = self.heap[0][0] - time.time() if self.heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    def _take_due(self) -> list[int]:
        """Pop up to batch_size due tasks, oldest due first; stale heap entries are skipped."""
        now, batch = time.time(), list[int]()
        while self.heap and self.heap[0][0] <= now and len(batch) < self.provider.batch_size:
            _, seq, pk = heapq.heappop(self.heap)
            if pk in self.tracked and pk not in self.busy and self.current.get(pk) == seq:
                batch.append(pk)
                self.busy.add(pk)
                if pk in self.hinted:
                    self.hinted.discard(pk)
                    self.serving.add(pk)
        return batch

    async def _poll(self, batch: list[int]) -> None:
        try:
            await self._ask(batch)
        except StateUnavailable as e:
            # Nothing was recorded: the tasks are simply asked again once the state DB is back.
            log.warning("provider=%s: polling pauses: %s", self.entry.name, e, extra={"provider": self.entry.name})
            for pk in batch:
                if pk in self.tracked:
                    self._later(pk, STATE_DOWN_PAUSE)
        except Exception:
            log.exception("provider=%s: unexpected error while polling; tasks will be polled again",
                          self.entry.name)
            for pk in batch:
                if pk in self.tracked:
                    self._later(pk)
        finally:
            self.busy.difference_update(batch)
            self.serving.difference_update(batch)
            self.slots.release()

    async def _ask(self, live: list[int]) -> None:
        ids = {self.tracked[pk].task_id: pk for pk in live}
        try:
            results = await self.provider.poll(self.http, list(ids))
        except KeyRejected as e:
            await self._trouble("unauthorised", str(e), live, UNAUTHORISED_PAUSE)
            return
        except RateLimited as e:
            await self._trouble("rate_limited", str(e), live, e.retry_after or 5.0)
            return
        except StateUnavailable:
            raise  # our own database, not the provider: see _poll
        except TransientError as e:
            self.failures += 1
            state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
            state.attempt_number = self.failures
            await self._trouble("failing", str(e), live, _backoff(state))
            return
        await self._healthy()
        for task_id, pk in ids.items():
            status = results.get(task_id)
            self.recorder.poll(self.entry.name, status.phase.value if status else "not_found")
            try:
                await self._handle(pk, status)
            except LeaseLost:
                log.info("provider=%s task_id=%s: another daemon holds this task now; letting it go",
                         self.entry.name, task_id, extra={"provider": self.entry.name, "task_id": task_id})
                self.drop(pk)

    async def ask_once(self, task_id: str) -> TaskStatus | None:
        """One extra, paced poll of a task that already succeeded; None if it cannot be had."""
        try:
            return (await self.provider.poll(self.http, [task_id])).get(task_id)
        except (TransientError, KeyRejected) as e:
            log.warning("provider=%s task_id=%s: asking again failed: %s", self.entry.name, task_id, e,
                        extra={"provider": self.entry.name, "task_id": task_id})
            return None

    async def refresh_url(self, task_id: str, url: str) -> str | None:
        """A fresh link for an expired result URL, if the provider offers them (kie); else None."""
        refresh = getattr(self.provider, "refresh_url", None)
        if refresh is None:
            return None
        try:
            return await refresh(self.http, task_id, url)
        except (TransientError, KeyRejected) as e:
            log.warning("provider=%s task_id=%s: asking for a fresh URL failed: %s", self.entry.name, task_id,
                        e, extra={"provider": self.entry.name, "task_id": task_id})
            return None

    async def _trouble(self, kind: str, message: str, live: list[int], pause: float) -> None:
        """One failed request: pause this entry only, keep its tasks, say why."""
        log.warning("provider=%s task_id=%s: %s; pausing this provider for %.1fs", self.entry.name,
                    ",".join(self.tracked[pk].task_id for pk in live), message, pause,
                    extra={"provider": self.entry.name, "reason": kind})
        self.http.bucket.pause(pause)
        self.recorder.poll(self.entry.name, kind, len(live))
        if kind == "unauthorised" and not self.unauthorised:
            self.unauthorised = True
            log.error("provider=%s: the API key was rejected; tasks wait and polling retries every %ds",
                      self.entry.name, UNAUTHORISED_PAUSE, extra={"provider": self.entry.name})
        for pk in live:
            # An unanswered poll stops the give_up_after clock: an outage never fails a task.
            self.tracked[pk].answered_at = None
            if pk in self.serving:
                self.hinted.add(pk)  # the callback's poll got no answer: ask again after the pause
            self._later(pk, pause)
        await self.state.set_health(self.entry.name, kind, message)
        for pk in live:
            try:
                await self.state.polled(pk, error=message, unknown_since=self.tracked[pk].unknown_since)
            except LeaseLost:
                self.drop(pk)

    async def _healthy(self) -> None:
        if self.failures or self.unauthorised:
            log.info("provider=%s: answering again", self.entry.name, extra={"provider": self.entry.name})
            await self.state.set_health(self.entry.name, "ok")
        self.failures = 0
        self.unauthorised = False

    async def _handle(self, pk: int, status: TaskStatus | None) -> None:
        tracked, now = self.tracked[pk], time.time()
        if status is None or status.phase == Phase.NOT_FOUND:
            tracked.unknown_since = tracked.unknown_since or now
            tracked.answered_at = None
            if now - tracked.unknown_since >= self.provider.not_found_grace:
                await self._fail(pk, "not_found", message="the provider does not know this task ID")
                return
            await self.state.polled(pk, unknown_since=tracked.unknown_since)
            self._later(pk)
        elif status.phase == Phase.RUNNING:
            await self._still_running(pk, tracked, now)
        elif status.phase == Phase.SUCCEEDED and not status.urls:
            await self._succeeded_empty(pk, tracked, now, status)
        elif status.phase == Phase.SUCCEEDED:
            task, assets = await self.state.succeeded(pk, status)
            self.drop(pk)  # only once recorded: a state DB that failed us leaves the task here, to ask again
            self.on_success(task, assets)
        else:
            await self._fail(pk, status.reason or "provider_failed", status.code, status.message,
                             status.response)

    async def _still_running(self, pk: int, tracked: Tracked, now: float) -> None:
        """Count toward give_up_after only the time between two answers of "still running"."""
        tracked.unknown_since = None
        if tracked.answered_at is not None:
            tracked.running_for += now - tracked.answered_at
        tracked.answered_at = now
        if tracked.running_for >= self.entry.give_up_after:
            await self._fail(pk, "timed_out", message=f"the provider said it was still running for "
                             f"{tracked.running_for:.0f}s (give_up_after {self.entry.give_up_after:.0f}s)")
            return
        await self.state.polled(pk, running_for=tracked.running_for)
        self._later(pk)

    async def _succeeded_empty(self, pk: int, tracked: Tracked, now: float, status: TaskStatus) -> None:
        """A success without result URLs: URLs can lag a moment, so ask a few more times first."""
        tracked.empty_successes += 1
        tracked.empty_since = tracked.empty_since or now
        if tracked.empty_successes > EMPTY_SUCCESS_POLLS and now - tracked.empty_since >= EMPTY_SUCCESS_WAIT:
            await self._fail(pk, "provider_failed", message="succeeded without any result URL",
                             response=status.response)
            return
        log.warning("provider=%s task_id=%s: succeeded without a result URL; asking again (%d of %d)",
                    self.entry.name, tracked.task_id, tracked.empty_successes, EMPTY_SUCCESS_POLLS + 1,
                    extra={"provider": self.entry.name, "task_id": tracked.task_id})
        await self.state.polled(pk, error="succeeded without a result URL yet; asking again")
        self._later(pk, EMPTY_SUCCESS_WAIT / EMPTY_SUCCESS_POLLS + 1)

    async def _fail(self, pk: int, reason: str, code: str | None = None, message: str | None = None,
                    response: object = None) -> None:
        task = await self.state.failed(pk, reason, code, message, response)
        self.drop(pk)
        await self.on_failed(task)

    def drop(self, pk: int) -> None:
        """Stop polling this task: it ended, or another daemon holds it now."""
        self.tracked.pop(pk, None)
        self.current.pop(pk, None)
        self.hinted.discard(pk)
