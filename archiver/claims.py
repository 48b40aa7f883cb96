"""Claims: this daemon takes free live tasks and keeps its leases on them with a heartbeat.

A free task is new, retried, or was a dead daemon's. Each claimed task goes where its state
says: to its entry's poller, or (downloading) its assets to the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from archiver.config import Config
from archiver.errors import StateUnavailable
from archiver.model import TaskState
from archiver.poller import EntryPoller
from archiver.staging import Staging
from archiver.state import StateStore
from archiver.state.records import CLAIM_BATCH
from archiver.workers import Workers

log = logging.getLogger(__name__)

CLAIM_EVERY = 1.0  # free tasks (added elsewhere, retried, a dead daemon's) are taken within this


class Claims:
    """Claims free tasks for the pollers and workers; the heartbeat renews the leases on them."""

    def __init__(self, config: Config, state: StateStore, pollers: Mapping[str, EntryPoller], workers: Workers,
                 staging: Staging) -> None:
        self.config = config
        self.state = state
        self.pollers = pollers
        self.workers = workers
        self.staging = staging
        self.soon = asyncio.Event()  # new tasks were stored: claim them now, not within CLAIM_EVERY
        self.state_down_since: float | None = None

    async def claim(self, *, start: bool = False) -> int:
        """Take free live tasks (new, retried, or a dead daemon's) and put them to work.

        At the start this is the recovery after a stop or a crash: everything unfinished is free,
        and staging keeps only what the tasks taken still wait for.
        """
        # Downloads held; the backend counts the waiting tasks we hold.
        claimed = await self.state.claim(self.workers.held, list(self.pollers))
        waiting = set()
        for one in claimed:
            if one.state == TaskState.DOWNLOADING:
                # Read now: another daemon, or our last run, may have archived some of its assets.
                assets = await self.state.assets(one.pk)
                pending = [a for a in assets if a.state != "archived"]
                waiting |= {(one.pk, a.idx) for a in pending}
                self.workers.start(await self.state.task(one.pk), pending, count=len(assets))
            else:
                self.pollers[one.provider].renew()  # it is in the poll queue now
        if start:
            await self.staging.sweep(self.state, waiting)
        return len(claimed)

    async def run(self) -> None:
        """Claim every CLAIM_EVERY, or at once when told new tasks were stored."""
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as the
            # event is set, and a stop during a backlog's claims then never ended (seen).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLAIM_EVERY):
                    await self.soon.wait()
            self.soon.clear()
            try:
                if await self.claim() >= CLAIM_BATCH:
                    self.soon.set()  # a backlog: take the next batch at once
            except StateUnavailable:
                pass  # the heartbeat says it, once per outage
            except Exception:
                log.exception("claiming tasks: unexpected error; retrying")

    async def heartbeats(self) -> None:
        """Renew our leases; say once when the state DB stops answering and when it is back."""
        while True:
            await asyncio.sleep(self.config.state.lease / 4)
            try:
                if not await self.state.heartbeat():
                    log.warning("state: this daemon's leases ran out while the state DB was out of reach;"
                                " tasks another daemon took meanwhile are let go as they come up")
                    self.workers.read_again()
                if self.state_down_since is not None:
                    log.info("state: the %s state DB answers again; work resumes", self.state.backend)
                    self.state_down_since = None
            except StateUnavailable as e:
                if self.state_down_since is None:
                    self.state_down_since = time.time()
                    log.error("state: %s; polling pauses, downloads finish into staging", e)
            except Exception:
                log.exception("state: heartbeat failed; retrying")
