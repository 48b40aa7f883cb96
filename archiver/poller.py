"""One provider entry's poller: due tasks from the state DB, served in batches within the rate limit.

The state DB is the queue: each task's `next_poll_at` says when it is asked next, so memory
holds only the polls in flight and the answers not written yet (WRITE_AFTER), whatever the
number of waiting tasks. When more is due than the rate limit allows, archiver/policy.py
decides what goes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from archiver import datauri
from archiver.config import ProviderEntry
from archiver.errors import KeyRejected, LeaseLost, RateLimited, StateUnavailable, TransientError
from archiver.model import Phase, TaskStatus
from archiver.pacing import ProviderHttp, poll_delay
from archiver.policy import Policy, lane_at, step_ends
from archiver.providers.base import Provider, RefreshesUrls
from archiver.recorder import Recorder
from archiver.retry import Backoff
from archiver.state import Asset, Polled, StateStore, Task

log = logging.getLogger(__name__)

UNAUTHORISED_PAUSE = 60.0  # a rejected key is retried once a minute until it works
STATE_DOWN_PAUSE = 5.0  # polling waits this long while the state DB does not answer
IDLE_LOOK = 30.0  # with nothing due, look again at least this often (tasks claimed meanwhile wake us)
PREFETCH = 8  # due tasks read per query: a new task waits behind at most this many polls
AGE_EVERY = 10.0  # how often waiting tasks move on to the lane of their age
# Answers that leave a task waiting are written together, before the queue is read again or within
# WRITE_AFTER seconds: one statement (one commit, one round trip) for many polls. A write lost in a
# crash only means those tasks are asked again.
WRITE_AFTER = 1.0
FAILING = Backoff(first=1.0, most=60.0)  # the pause after failed polls in a row: 1 s, 2 s, 4 s… 60 s, +0-1 s


EMPTY_SUCCESS_POLLS = 3  # a success without URLs is asked about this many more times...
EMPTY_SUCCESS_WAIT = 60.0  # ...over at least this many seconds, since URLs can lag a success (the default
# of providers.*.empty_success_wait)


OnSuccess = Callable[[Task, list[Asset], dict[int, str]], None]  # task, its assets, inline results by index
OnFailed = Callable[[Task], Awaitable[None]]


class EntryPoller:
    """Polls every live task of one provider entry that this daemon holds."""

    def __init__(self, entry: ProviderEntry, provider: Provider, http: ProviderHttp, state: StateStore,
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
        self.policy = Policy()
        self.ends = step_ends(entry.poll_intervals)  # lane k: step k of the schedule; the last lane is old
        self.aged_at = 0.0  # monotonic: when waiting tasks last moved on to the lane of their age
        self.ready: deque[Task] = deque()  # due tasks read ahead, in the policy's order
        self.wake = asyncio.Event()
        self.failures = 0
        self.unauthorised = False
        self.paused_until = 0.0  # monotonic: the state DB failed us, or a batch failed unexpectedly
        in_flight = max(2, min(32, int(entry.requests_per_second * 2)))
        self.slots = asyncio.Semaphore(in_flight)
        self.running: set[asyncio.Task[None]] = set()
        self.busy: set[int] = set()  # tasks with a poll in flight
        self.unwritten: dict[int, tuple[str, Polled]] = {}  # answered, not written yet: pk → (task_id, write)
        self.unwritten_since = 0.0  # monotonic: when the oldest of them was answered
        self._writing = asyncio.Lock()
        self.hinted: set[int] = set()  # a callback asked for a fresh answer; no poll has started since
        self.serving: set[int] = set()  # hinted tasks whose poll is in flight

    async def poll_now(self, pk: int) -> bool:
        """Poll this task at once (a provider's callback said it ended); False if it is not ours now.

        A poll already in flight may have left the provider before the task ended: the task is
        then asked once more right after it. A hinted poll refused by a 429 or 5xx is asked
        again when the pause ends, not at the task's next scheduled time.
        """
        if pk in self.unwritten:
            await self.flush()  # else the pending write would put back the time poll_soon sets
        if pk not in self.busy and not await self.state.poll_soon(pk):
            return False
        self.hinted.add(pk)
        self.renew()
        return True

    def renew(self) -> None:
        """New work may be due (claimed, or hinted by a callback): read the queue afresh."""
        self.ready.clear()
        self.wake.set()

    def _unsettled(self) -> set[int]:
        """Tasks the state DB must not hand out as due: polls in flight, answers not written yet."""
        return self.busy | self.unwritten.keys()

    def _answered(self, task: Task, **write: Any) -> None:
        """Queue the write of a poll that left the task waiting (see WRITE_AFTER)."""
        if not self.unwritten:
            self.unwritten_since = time.monotonic()
        self.unwritten[task.pk] = (task.task_id, Polled(task.pk, time.time(), **write))

    async def flush(self) -> None:
        """Write the answers not written yet, in one statement; a task another daemon now holds is let go.

        Raises StateUnavailable (nothing written: those tasks are asked again once the DB is back)."""
        async with self._writing:
            writes = dict(self.unwritten)
            if not writes:
                return
            try:
                lost = await self.state.polled_many([w for _, w in writes.values()])
            except StateUnavailable:
                raise
            except Exception:
                log.exception("provider=%s: unexpected error while recording polls; tasks will be polled again",
                              self.entry.name)
                self.paused_until = time.monotonic() + STATE_DOWN_PAUSE  # not a hot loop on the same due tasks
                lost = set()
            finally:
                for pk in writes:
                    del self.unwritten[pk]
            for pk in lost:
                task_id = writes[pk][0]
                log.info("provider=%s task_id=%s: another daemon holds this task now; letting it go",
                         self.entry.name, task_id, extra={"provider": self.entry.name, "task_id": task_id})

    def _next_poll(self, task: Task, delay: float | None = None) -> dict[str, Any]:
        """When to ask next, and in which lane: the schedule for the task's age (at once if a callback
        hinted), never sooner than `delay` or the provider's own per-task limit."""
        now = time.time()
        normal = 0.0 if task.pk in self.hinted else poll_delay(self.entry.poll_intervals, now - task.first_seen_at,
                                                              self.rng)
        # A provider may cap queries per task (Provider.min_poll_interval).
        normal = max(normal, self.provider.min_poll_interval)
        at = now + max(normal, delay or 0.0)
        return {"next_poll_at": at, "lane": lane_at(self.ends, at - task.first_seen_at)}

    async def run(self) -> None:
        while True:
            if (pause := self.paused_until - time.monotonic()) > 0:
                await asyncio.sleep(pause)
            await self.slots.acquire()
            # Take the batch only when a request could go now, so a batching provider
            # (batch_size above 1) collects every task that fell due while we waited for the token.
            await self.http.bucket.ready()
            try:
                if self.unwritten and time.monotonic() - self.unwritten_since >= WRITE_AFTER:
                    await self.flush()
                batch = await self._take_due()
            except StateUnavailable as e:
                self.slots.release()
                self._state_down(e)
                continue
            if not batch:
                self.slots.release()
                await self._until_due()
                continue
            job = asyncio.create_task(self._poll(batch))
            self.running.add(job)
            job.add_done_callback(self.running.discard)

    async def _take_due(self) -> list[Task]:
        n = self.provider.batch_size
        if len(self.ready) < n:
            await self.flush()  # the queue read next must see every answer so far
            if self.ends and time.monotonic() - self.aged_at >= AGE_EVERY:
                # A backlog too big for the rate keeps its unpolled tasks in the lane they were filed
                # in; without this, a task added later waited behind all of them, whatever their age.
                self.aged_at = time.monotonic()
                await self.state.age(self.entry.name, time.time(), self.ends)
            lanes = await self.state.due(self.entry.name, time.time(), max(n, PREFETCH), self._unsettled(),
                                         len(self.ends) + 1)
            self.ready = deque(self.policy.pick(lanes, max(n, PREFETCH)))
        batch = list[Task]()
        while self.ready and len(batch) < n:
            task = self.ready.popleft()
            if task.pk in self.busy:
                continue
            batch.append(task)
            self.busy.add(task.pk)
            if task.pk in self.hinted:
                self.hinted.discard(task.pk)
                self.serving.add(task.pk)
        return batch

    async def _until_due(self) -> None:
        """Sleep until this entry's next task falls due, new work arrives, or IDLE_LOOK passes."""
        self.wake.clear()
        try:
            await self.flush()
            due = await self.state.next_due(self.entry.name, self._unsettled())
        except StateUnavailable as e:
            self._state_down(e)
            return
        wait = IDLE_LOOK if due is None else min(IDLE_LOOK, max(0.0, due - time.time()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):  # not wait_for, which can swallow a cancel on 3.11
                await self.wake.wait()

    def _state_down(self, e: StateUnavailable) -> None:
        # Nothing was recorded: the tasks are simply asked again once the state DB is back.
        log.warning("provider=%s: polling pauses: %s", self.entry.name, e, extra={"provider": self.entry.name})
        self.paused_until = time.monotonic() + STATE_DOWN_PAUSE

    async def _poll(self, batch: list[Task]) -> None:
        try:
            await self._ask(batch)
        except StateUnavailable as e:
            self._state_down(e)
        except Exception:
            log.exception("provider=%s: unexpected error while polling; tasks will be polled again",
                          self.entry.name)
            self.paused_until = time.monotonic() + STATE_DOWN_PAUSE  # not a hot loop on the same due tasks
        finally:
            pks = {t.pk for t in batch}
            self.busy.difference_update(pks)
            self.serving.difference_update(pks)
            self.slots.release()
            self.wake.set()

    async def _ask(self, live: list[Task]) -> None:
        ids = {t.task_id: t for t in live}
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
            await self._trouble("failing", str(e), live, FAILING.delay(self.failures))
            return
        await self._healthy()
        for task_id, task in ids.items():
            status, inline = datauri.elide_status(results[task_id]) if task_id in results else (None, {})
            self.recorder.poll(self.entry.name, status.phase.value if status else "not_found")
            try:
                await self._handle(task, status, inline)
            except LeaseLost:
                log.info("provider=%s task_id=%s: another daemon holds this task now; letting it go",
                         self.entry.name, task_id, extra={"provider": self.entry.name, "task_id": task_id})

    async def ask_once(self, task_id: str) -> TaskStatus | None:
        """One extra, paced poll of a task that already succeeded; None if it cannot be had."""
        try:
            return (await self.provider.poll(self.http, [task_id])).get(task_id)
        except (TransientError, KeyRejected) as e:
            log.warning("provider=%s task_id=%s: asking again failed: %s", self.entry.name, task_id, e,
                        extra={"provider": self.entry.name, "task_id": task_id})
            return None

    async def refresh_url(self, task_id: str, url: str) -> str | None:
        """A fresh link for an expired result URL, if the provider offers them (RefreshesUrls); else None."""
        if not isinstance(self.provider, RefreshesUrls):
            return None
        try:
            return await self.provider.refresh_url(self.http, task_id, url)
        except (TransientError, KeyRejected) as e:
            log.warning("provider=%s task_id=%s: asking for a fresh URL failed: %s", self.entry.name, task_id,
                        e, extra={"provider": self.entry.name, "task_id": task_id})
            return None

    async def _trouble(self, kind: str, message: str, live: list[Task], pause: float) -> None:
        """One failed request: pause this entry only, keep its tasks, say why."""
        log.warning("provider=%s task_id=%s: %s; pausing this provider for %.1fs", self.entry.name,
                    ",".join(t.task_id for t in live), message, pause,
                    extra={"provider": self.entry.name, "reason": kind})
        self.http.bucket.pause(pause)
        self.recorder.poll(self.entry.name, kind, len(live))
        if kind == "unauthorised" and not self.unauthorised:
            self.unauthorised = True
            log.error("provider=%s: the API key was rejected; tasks wait and polling retries every %ds",
                      self.entry.name, UNAUTHORISED_PAUSE, extra={"provider": self.entry.name})
        await self.state.set_health(self.entry.name, kind, message)
        for task in live:
            if task.pk in self.serving:
                self.hinted.add(task.pk)  # the callback's poll got no answer: ask again after the pause
            # An unanswered poll stops the give_up_after clock (answered_at cleared): an outage never fails a task.
            self._answered(task, error=message, unknown_since=task.unknown_since,
                           empty=(task.empty_polls, task.empty_since), **self._next_poll(task, pause))
        await self.flush()  # at once: the pause may be long, and the run loop waits it out

    async def _healthy(self) -> None:
        if self.failures or self.unauthorised:
            log.info("provider=%s: answering again", self.entry.name, extra={"provider": self.entry.name})
            await self.state.set_health(self.entry.name, "ok")
        self.failures = 0
        self.unauthorised = False

    async def _handle(self, task: Task, status: TaskStatus | None, inline: dict[int, str]) -> None:
        """Act on one answer; `status` holds no data: payload, `inline` has them by index (memory only)."""
        now = time.time()
        if status is None or status.phase == Phase.NOT_FOUND:
            unknown_since = task.unknown_since or now
            if now - unknown_since >= self.provider.not_found_grace:
                await self._fail(task, "not_found", message="the provider does not know this task ID")
                return
            self._answered(task, unknown_since=unknown_since, **self._next_poll(task))
        elif status.phase == Phase.RUNNING:
            await self._still_running(task, now)
        elif status.phase == Phase.SUCCEEDED and not status.urls:
            await self._succeeded_empty(task, now, status)
        elif status.phase == Phase.SUCCEEDED:
            done, assets = await self.state.succeeded(task.pk, status)
            self.hinted.discard(task.pk)
            self.on_success(done, assets, inline)
        else:
            await self._fail(task, status.reason or "provider_failed", status.code, status.message, status.response)

    async def _still_running(self, task: Task, now: float) -> None:
        """Count toward give_up_after only the time between two answers of "still running"."""
        running_for = task.running_for + (now - task.answered_at if task.answered_at is not None else 0.0)
        if running_for >= self.entry.give_up_after:
            await self._fail(task, "timed_out", message=f"the provider said it was still running for "
                             f"{running_for:.0f}s (give_up_after {self.entry.give_up_after:.0f}s)")
            return
        self._answered(task, running_for=running_for, answered_at=now, **self._next_poll(task))

    async def _succeeded_empty(self, task: Task, now: float, status: TaskStatus) -> None:
        """A success without result URLs: URLs can lag a moment, so ask a few more times first."""
        empty, since = task.empty_polls + 1, task.empty_since or now
        wait = self.entry.empty_success_wait
        if wait is None:
            wait = self.provider.empty_success_wait
        if wait is None:
            wait = EMPTY_SUCCESS_WAIT
        if empty > EMPTY_SUCCESS_POLLS and now - since >= wait:
            await self._fail(task, "provider_failed", message="succeeded without any result URL",
                             response=status.response)
            return
        log.warning("provider=%s task_id=%s: succeeded without a result URL; asking again (%d of %d)",
                    self.entry.name, task.task_id, empty, EMPTY_SUCCESS_POLLS + 1,
                    extra={"provider": self.entry.name, "task_id": task.task_id})
        # A little over wait/POLLS apart (21 s for 60 s), so the last of them comes after `wait`.
        self._answered(task, error="succeeded without a result URL yet; asking again", empty=(empty, since),
                       **self._next_poll(task, wait / EMPTY_SUCCESS_POLLS * 1.05))

    async def _fail(self, task: Task, reason: str, code: str | None = None, message: str | None = None,
                    response: object = None) -> None:
        failed = await self.state.failed(task.pk, reason, code, message, response, polled=True)
        self.hinted.discard(task.pk)
        await self.on_failed(failed)
