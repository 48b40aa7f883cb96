"""The download workers: a queue of assets to archive, their requeues, and the pause on a full disk.

Each queued asset carries its task and itself as whoever queued it read them (a poll's success,
a claim), so a worker hands the Archivist what it needs without reading the state DB again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import aiohttp

from archiver.archive_format.keys import thumb_key
from archiver.archiving import Archivist, Asker, Downloading
from archiver.config import Config, DownloadConfig
from archiver.download import Downloader
from archiver.errors import LeaseLost, StateUnavailable
from archiver.jobs import cancel
from archiver.logs import task_fields
from archiver.model import TaskState
from archiver.recorder import Recorder
from archiver.staging import Staging
from archiver.state import Asset, StateStore, Task
from archiver.storage import Storage
from archiver.thumbs.catchup import CatchUp
from archiver.thumbs.make import Thumb
from archiver.thumbs.worker import Thumbnailer
from archiver.urlguard import UrlGuard, guarded_connector

log = logging.getLogger(__name__)

STATE_DOWN_RETRY = 5.0  # an asset whose state write failed is tried again after this

Key = tuple[int, int]  # (task pk, asset idx)


def download_session(dl: DownloadConfig, guard: UrlGuard) -> aiohttp.ClientSession:
    """The session every download goes through; `guard` judges each address it connects to."""
    connector = guarded_connector(guard, dl.concurrency, dl.per_host)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False, timeout=timeout, trust_env=False)


class Workers:
    """download.concurrency workers (`run`, one task each) taking assets from one queue."""

    def __init__(self, config: Config, state: StateStore, storage: Storage, downloader: Downloader,
                 staging: Staging, askers: Mapping[str, Asker], stopping: asyncio.Event,
                 recorder: Recorder) -> None:
        self.config = config
        self.state = state
        self.staging = staging
        self.stopping = stopping
        # Thumbnails: a queue and a process of their own, fed after each store, never waited for; while
        # nothing is queued, the worker catches up on those the state DB says are missing.
        self.thumbnailer = Thumbnailer(storage, config.thumbnails.size, self._thumb_made, unmade=state.thumb_failed,
                                       idle=CatchUp(state, staging.thumbs)) if config.thumbnails.enabled else None
        self.archivist = Archivist(config, state, storage, downloader, staging, askers=askers, scheduler=self,
                                   recorder=recorder, thumbnailer=self.thumbnailer)
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        # What the worker of each queued (or requeued) asset starts from; None: read afresh. An asset is
        # in the queue, or on a requeue's timer, once while it is here.
        self.pending: dict[Key, tuple[Downloading, Asset] | None] = {}
        self.busy = 0
        self.finished = 0  # downloads archived by this run
        self.paused_until = 0.0  # downloads wait until then after a disk-full error
        self.disk_was_full = False
        self.working: set[Key] = set()  # assets a worker is on; never two workers on one
        self.idle: set[asyncio.Task[None]] = set()  # workers waiting for an asset: a stop ends them at once

    @property
    def held(self) -> int:
        """Downloads this daemon holds: queued and under way."""
        return self.queue.qsize() + self.busy

    def start(self, task: Task, assets: list[Asset], inline: dict[int, str] | None = None,
              count: int | None = None) -> None:
        """Success seen: queue its downloads at once, ahead of any further polling.

        `inline` holds the data: URIs of the answer by index; only memory keeps them (datauri.py).
        `count` is the task's asset count when the caller read every asset (else it is read once)."""
        for idx, uri in (inline or {}).items():
            self.archivist.inline[(task.pk, idx)] = uri
        log.info("provider=%s task_id=%s: succeeded with %d asset(s) to download", task.provider,
                 task.task_id, len(assets), extra=task_fields(task.provider, task.task_id, TaskState.DOWNLOADING))
        job = Downloading(task, count)
        for asset in assets:
            # Queued already (a lease lost and the task claimed again): the newer read wins.
            if (task.pk, asset.idx) not in self.pending:
                self.queue.put_nowait((task.pk, asset.idx))
            self.pending[(task.pk, asset.idx)] = (job, asset)

    def requeue(self, pk: int, idx: int, delay: float) -> None:
        """Try the asset again after `delay`, reading it afresh then (see _archive)."""
        if (pk, idx) not in self.pending:
            asyncio.get_running_loop().call_later(delay, self.queue.put_nowait, (pk, idx))
        self.pending[(pk, idx)] = None

    def read_again(self) -> None:
        """Our leases ran out while the state DB was out of reach: another daemon may have worked on
        any queued asset meanwhile, so each is read afresh before its worker starts on it."""
        for key in self.pending:
            self.pending[key] = None

    async def disk_full(self, error: str) -> None:
        """No space for staging or the archive: every download pauses; nothing fails for it."""
        pause = self.config.download.disk_full_pause
        log.error("disk full: %s; downloads pause for %gs, polling goes on", error, pause)
        self.disk_was_full = True
        self.paused_until = time.monotonic() + pause
        await self.state.set_health("disk", "full", error)

    def launch(self) -> list[asyncio.Task[None]]:
        """The download workers' tasks; the thumbnail worker starts too, to catch up on what the last run left."""
        if self.thumbnailer is not None:
            self.thumbnailer.start()
        return [asyncio.create_task(self.run(), name=f"download:{i}") for i in range(self.config.download.concurrency)]

    async def run(self) -> None:
        """One worker: archive queued assets, one at a time, until the daemon stops."""
        while not self.stopping.is_set():
            if (wait := self.paused_until - time.monotonic()) > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            me = asyncio.current_task()
            assert me is not None
            self.idle.add(me)
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as
                # the queue hands out an item.
                async with asyncio.timeout(0.5):
                    key = await self.queue.get()
            except TimeoutError:
                continue
            finally:
                self.idle.discard(me)
            if key not in self.pending or key in self.working:
                self.pending.pop(key, None)
                continue  # claimed again after a lost lease while a worker is on it
            await self._archive(key, self.pending.pop(key))

    async def _archive(self, key: Key, work: tuple[Downloading, Asset] | None) -> None:
        pk, idx = key
        self.busy += 1
        self.working.add(key)
        try:
            if work is None:
                # A requeue: meanwhile another asset may have failed the task, the provider given a fresh
                # URL, the key been stored, or another daemon held the task; what was read before is stale.
                task, asset, count = await self.state.asset_work(pk, idx)
                work = Downloading(task, count), asset
            if await self.archivist.archive(*work):
                self.finished += 1
            if self.disk_was_full and self.paused_until < time.monotonic():
                self.disk_was_full = False
                await self.state.set_health("disk", "ok")
        except StateUnavailable as e:
            log.warning("asset %d of task #%d waits in staging: %s", idx, pk, e)
            self.requeue(pk, idx, STATE_DOWN_RETRY)
        except LeaseLost:
            log.info("asset %d of task #%d: another daemon holds the task now; letting it go", idx, pk)
            self.archivist.let_go(pk, idx)
        except Exception:
            log.exception("unexpected error archiving asset %d of task #%d; it will be retried", idx, pk)
            self.requeue(pk, idx, self.config.download.retry_after)
        finally:
            self.busy -= 1
            self.working.discard(key)

    async def drain(self, jobs: list[asyncio.Task[None]], deadline: float, burst: bool = False) -> None:
        """At a stop: the downloads in flight may finish until `deadline`; the rest resume next start.
        In burst mode the thumbnails queued are made too, then the missing ones (thumbs/catchup.py); otherwise
        they are left for the next start's catch-up."""
        for job in self.idle:
            job.cancel()  # nothing in hand: waiting out its queue timeout would only delay the stop
        _, pending = await asyncio.wait(jobs, timeout=max(0.0, deadline - time.monotonic()))
        await cancel(pending)
        if self.thumbnailer is not None:
            await self.thumbnailer.stop(deadline if burst else 0.0, finish=burst)
            self.staging.thumbs_done()

    async def _thumb_made(self, key: str, thumb: Thumb) -> None:
        await self.state.set_media(key, width=thumb.width, height=thumb.height, thumb=thumb_key(key),
                                   placeholder=thumb.placeholder)

    async def records(self) -> None:
        """_failed records the store refused (or a crash cut off) are written again, now and then;
        staged files of tasks another daemon finished meanwhile go then too."""
        while True:
            try:
                await self.archivist.write_due_records()
                await self.staging.sweep(self.state, set(self.working))
            except StateUnavailable:
                pass  # the heartbeat says it, once per outage
            except Exception:
                log.exception("failed records: unexpected error; retrying")
            await asyncio.sleep(self.config.download.retry_after)
