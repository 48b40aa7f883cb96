"""Intake: the inbox loop. New lines become queued tasks; in burst mode it also says when all is done."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from archiver.config import Config
from archiver.errors import StateUnavailable
from archiver.inbox import InboxReader
from archiver.logs import task_fields
from archiver.model import TaskState
from archiver.recorder import Recorder
from archiver.state import StateStore
from archiver.systemd import Notifier
from archiver.workers import Workers

log = logging.getLogger(__name__)

INBOX_TICK = 0.2  # a new inbox line is noticed within this many seconds


class Intake:
    """Reads the inbox into the state DB; `stored` is set when new tasks were stored (to claim them)."""

    def __init__(self, config: Config, state: StateStore, stored: asyncio.Event, workers: Workers,
                 notifier: Notifier, recorder: Recorder, *, when_idle: Callable[[], None] | None = None) -> None:
        self.config = config
        self.state = state
        self.stored = stored
        self.workers = workers
        self.notifier = notifier
        self.recorder = recorder
        self.when_idle = when_idle  # burst mode: called once the inbox is read and nothing is in flight

    async def open(self) -> InboxReader:
        """The inbox, read on from where the state DB says the last run stopped."""
        return InboxReader(self.config.inbox.path, await self.state.inbox_position(),
                           self.config.providers.keys(), self.config.inbox.default_provider)

    async def run(self, reader: InboxReader) -> None:
        checked = time.time()
        while True:
            now = time.time()
            more = False
            try:
                more = await self._read(reader)
                if now - checked >= 1.0:
                    # kept_counts: constant cost; a GROUP BY here held the loop 11 ms a second at 100k tasks.
                    counts = await self.state.kept_counts()
                    self.notifier.status(" ".join(f"{k} {v}" for k, v in counts.items()))
                    checked = now
                if self.when_idle is not None and await self._idle():
                    self.when_idle()
            except StateUnavailable:
                pass  # the lines stay in the inbox; the heartbeat says why
            except OSError as e:
                log.error("inbox %s cannot be read: %s; retrying", self.config.inbox.path, e)
            except Exception:
                # Intake must outlive any one bad moment (a locked or full state disk).
                log.exception("inbox: unexpected error; retrying")
            await asyncio.sleep(0 if more else INBOX_TICK)  # a backlog is read batch after batch

    async def _read(self, reader: InboxReader) -> bool:
        """Store what the inbox holds now, one batch; True if more lines wait."""
        batch = reader.read()
        if batch.position is None or (batch.position == reader.saved and not batch.rejects):
            return False
        for bad in batch.rejects:
            log.error("inbox line %d rejected: %s", bad.line_no, bad.reason, extra={"reason": "bad_line"})
        try:
            new = await self.state.ingest(batch.refs, batch.rejects, batch.position)
        except BaseException:
            reader.rewind()  # read these lines again once they can be stored
            raise
        reader.saved = batch.position
        self.recorder.inbox_lines("queued", len(new))
        self.recorder.inbox_lines("known", len(batch.refs) - len(new))
        self.recorder.inbox_lines("rejected", len(batch.rejects))
        for task in new:
            log.info("provider=%s task_id=%s: queued", task.provider, task.task_id,
                     extra=task_fields(task.provider, task.task_id, TaskState.QUEUED))
        if new:
            self.stored.set()
        return batch.full

    async def _idle(self) -> bool:
        """Nothing in flight that this run can finish. Tasks of an entry without a key (or no longer
        in the config) wait for a later run, so they do not keep a burst run going."""
        counts = await self.state.kept_counts()
        if self.workers.busy or counts["downloading"]:
            return False
        if not (counts["queued"] or counts["polling"]):
            return True
        for name, entry in self.config.providers.items():
            if entry.no_key() is None and await self.state.oldest_pending(name) is not None:
                return False
        return True
