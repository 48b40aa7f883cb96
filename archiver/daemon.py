"""The daemon: one object owning intake, pollers and download workers (design.md §5, §9).

`run()` works until SIGTERM/SIGINT; with `burst=True` it returns once the inbox is read
and no task is left in flight, which makes end-to-end tests deterministic.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from archiver.archiving import REQUEUE_AFTER, Archiver
from archiver.browse.index import IndexLoop
from archiver.config import Config
from archiver.download import Downloader
from archiver.inbox import InboxReader
from archiver.lock import DaemonLock
from archiver.logs import task_fields
from archiver.model import State, TaskStatus
from archiver.pacing import ProviderHttp, TokenBucket
from archiver.poller import EntryPoller
from archiver.providers import PROVIDERS
from archiver.recorder import Recorder
from archiver.state import Asset, StateDB, Task
from archiver.storage import open_storage
from archiver.systemd import Notifier
from archiver.urlguard import UrlGuard, guarded_connector

if TYPE_CHECKING:
    from archiver.web.app import WebServer

log = logging.getLogger(__name__)

INBOX_TICK = 0.2  # a new inbox line is noticed within this many seconds
POLL_DRAIN = 3.0  # seconds a poll in flight may take to finish at shutdown
DISK_FULL_PAUSE = 30.0  # downloads wait this long after ENOSPC, then try again


def state_path(config: Config) -> Path:
    return config.state_dir / "archiver.db"


def shared_buckets(config: Config) -> dict[str, TokenBucket]:
    """One token bucket per API key: providers limit a key, not an entry of ours.

    Entries with the same type, base_url and key share one bucket at the lowest of their rates.
    """
    groups: dict[tuple[str, str, str], list[str]] = {}
    for name, entry in config.providers.items():
        groups.setdefault((entry.type, entry.base_url, entry.api_key.reveal()), []).append(name)
    buckets = {}
    for names in groups.values():
        bucket = TokenBucket(min(config.providers[n].requests_per_second for n in names))
        buckets.update(dict.fromkeys(names, bucket))
    return buckets


class Daemon:
    def __init__(self, config: Config, *, burst: bool = False, seed: int | None = None) -> None:
        self.config = config
        self.burst = burst
        self.rng = random.Random(seed)
        self.staging = config.state_dir / "staging"
        self.stopping = asyncio.Event()
        self.queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self.busy = 0
        self.finished = 0  # downloads archived by this run
        self.finished_at_stop = self.left_at_stop = 0
        self.paused_until = 0.0  # downloads wait until then after a disk-full error
        self.disk_was_full = False
        self.notifier = Notifier.from_env()
        self.recorder = Recorder()  # counts nothing unless the HTTP server (and /metrics) is on

    async def run(self) -> None:
        lock = DaemonLock(state_path(self.config))
        lock.acquire()
        try:
            await self._run()
        finally:
            lock.release()
        log.info("stopped: %d downloads finished, %d resume on next start", self.finished_at_stop,
                 self.left_at_stop)

    async def _run(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        self.state = StateDB(state_path(self.config))
        self.state.clear_health()
        if self.config.http is not None:
            from archiver.web.metrics import Metrics  # prometheus_client only when http is on

            self.recorder = Metrics(self.state, self.config.providers)
        self.storage = open_storage(self.config.storage)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        guard = UrlGuard(self.config.download.allow_addresses)
        dl = self.config.download
        connector = guarded_connector(guard, dl.concurrency, dl.per_host)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
        try:
            async with aiohttp.ClientSession() as api, aiohttp.ClientSession(
                connector=connector, auto_decompress=False, timeout=timeout, trust_env=False
            ) as downloads:
                await self.storage.start()
                downloader = Downloader(downloads, max_bytes=dl.max_bytes, per_host=dl.per_host,
                                        check_url=guard.check_url)
                self.archiver = Archiver(self.config, self.state, self.storage, downloader, self.staging,
                                         ask_once=self._ask_once, requeue=self._requeue,
                                         disk_full=self._disk_full, refresh=self._refresh_url,
                                         recorder=self.recorder)
                self.pollers = self._pollers(api)
                web = await self._start_web()
                try:
                    await self._main()
                finally:
                    if web is not None:
                        await web.close()
        finally:
            await self.storage.close()
            self.state.close()

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: no new work; finishing downloads in flight")
            self.notifier.stopping()
            self.stopping.set()

    def _pollers(self, api: aiohttp.ClientSession) -> dict[str, EntryPoller]:
        pollers, buckets = {}, shared_buckets(self.config)
        for name, entry in self.config.providers.items():
            provider = PROVIDERS[entry.type](entry)
            http = ProviderHttp(name, api, buckets[name], recorder=self.recorder)
            pollers[name] = EntryPoller(entry, provider, http, self.state, self._downloads_start,
                                        self.archiver.write_failed, self.rng, self.recorder)
        return pollers

    async def _start_web(self) -> WebServer | None:
        """The HTTP server (design.md §12), before any work starts: a taken port stops the start."""
        if self.config.http is None:
            return None
        from archiver.web.app import Hooks, WebServer
        from archiver.web.metrics import Metrics

        assert isinstance(self.recorder, Metrics)
        hooks = Hooks(queue=self._poll, poll_now=self._poll_now,
                      store_failing_since=lambda: self.archiver.storage_failing_since)
        server = WebServer(self.config, self.state, self.recorder, hooks)
        await server.start()
        return server

    def _poll_now(self, task: Task) -> bool:
        poller = self.pollers.get(task.provider)
        return poller is not None and poller.poll_now(task.pk)

    async def _main(self) -> None:
        self._recover()
        reader = InboxReader(self.config.inbox.path, self.state.inbox_position(),
                             self.config.providers.keys(), self.config.inbox.default_provider)
        intake = [asyncio.create_task(self._intake(reader), name="inbox"),
                  asyncio.create_task(self._records(), name="failed-records")]
        intake += [asyncio.create_task(p.run(), name=f"poll:{n}") for n, p in self.pollers.items()]
        if self.config.index.enabled:  # its own loop and DB connection: never in the workers' way
            index = IndexLoop(self.config, self.storage, state_path(self.config))
            intake.append(asyncio.create_task(index.run(), name="index"))
        workers = [asyncio.create_task(self._worker(), name=f"download:{i}")
                   for i in range(self.config.download.concurrency)]
        self.notifier.ready()
        watchdog = asyncio.create_task(self.notifier.watchdog_loop())
        log.info("archiver running: %d provider entries, inbox %s", len(self.pollers), self.config.inbox.path)
        try:
            await self.stopping.wait()
        finally:
            for job in intake:
                job.cancel()
            await asyncio.gather(*intake, return_exceptions=True)
            # Polls in flight get a moment to record their answer; one held back by a
            # paused provider is cancelled and simply asked again on the next start.
            deadline = time.monotonic() + self.config.shutdown_grace
            polls = [job for poller in self.pollers.values() for job in poller.running]
            if polls:
                await asyncio.wait(polls, timeout=min(POLL_DRAIN, self.config.shutdown_grace))
            for job in polls:
                job.cancel()
            await asyncio.gather(*polls, return_exceptions=True)
            reader.close()
            # Downloads in flight may finish within the grace period; the rest resume next start.
            before = self.finished
            await self._drain(workers, deadline)
            watchdog.cancel()
            self.finished_at_stop = self.finished - before
            self.left_at_stop = self.state.assets_pending()

    async def _drain(self, workers: list[asyncio.Task[None]], deadline: float) -> None:
        _, pending = await asyncio.wait(workers, timeout=max(0.0, deadline - time.monotonic()))
        for job in pending:
            job.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def _recover(self) -> None:
        """Put every unfinished task back to work after a start or a crash."""
        for task in self.state.tasks_in((State.QUEUED, State.POLLING)):
            self._poll(task)
        wanted = set()
        for task in self.state.tasks_in((State.DOWNLOADING,)):
            pending = [a for a in self.state.assets(task.pk) if a.state != "archived"]
            wanted |= {f"{task.pk}-{a.idx}.part" for a in pending}
            self._downloads_start(task, pending)
        # Staged files no pending asset owns (archived or failed before a crash) are litter.
        for path in self.staging.iterdir():
            if path.name.removesuffix(".etag") not in wanted:
                path.unlink(missing_ok=True)

    def _poll(self, task: Task) -> None:
        poller = self.pollers.get(task.provider)
        if poller is None:
            log.error("provider=%s task_id=%s: no such provider entry in the config; the task waits",
                      task.provider, task.task_id, extra=task_fields(task.provider, task.task_id))
            return
        poller.add(task)

    # --- intake ---------------------------------------------------------------------------

    async def _intake(self, reader: InboxReader) -> None:
        checked = time.time()
        while True:
            now = time.time()
            try:
                self._read_inbox(reader)
                if now - checked >= 1.0:
                    self._pick_up_retried(checked - 1.0)
                    # kept_counts: constant cost; a GROUP BY here held the loop 11 ms a second at 100k tasks.
                    self.notifier.status(" ".join(f"{k} {v}" for k, v in self.state.kept_counts().items()))
                    checked = now
            except OSError as e:
                log.error("inbox %s cannot be read: %s; retrying", self.config.inbox.path, e)
            except Exception:
                # Intake must outlive any one bad moment (a locked or full state disk).
                log.exception("inbox: unexpected error; retrying")
            if self.burst and self._idle():
                self.stop()
            await asyncio.sleep(INBOX_TICK)

    async def _records(self) -> None:
        """_failed records the store refused (or a crash cut off) are written again, now and then."""
        while True:
            try:
                await self.archiver.write_due_records()
            except Exception:
                log.exception("failed records: unexpected error; retrying")
            await asyncio.sleep(REQUEUE_AFTER)

    def _pick_up_retried(self, since: float) -> None:
        """Tasks `archiver retry` put back in the queue, from another process."""
        for pk in self.state.queued_since(since):
            if not any(pk in poller.tracked for poller in self.pollers.values()):
                self._poll(self.state.task(pk))

    def _read_inbox(self, reader: InboxReader) -> None:
        batch = reader.read()
        if batch.position is None or (batch.position == reader.saved and not batch.rejects):
            return
        for bad in batch.rejects:
            log.error("inbox line %d rejected: %s", bad.line_no, bad.reason, extra={"reason": "bad_line"})
        new = self.state.ingest(batch.refs, batch.rejects, batch.position)
        reader.saved = batch.position
        self.recorder.inbox_lines("queued", len(new))
        self.recorder.inbox_lines("known", len(batch.refs) - len(new))
        self.recorder.inbox_lines("rejected", len(batch.rejects))
        for task in new:
            log.info("provider=%s task_id=%s: queued", task.provider, task.task_id,
                     extra=task_fields(task.provider, task.task_id, State.QUEUED))
            self._poll(task)

    def _idle(self) -> bool:
        counts = self.state.kept_counts()
        return not (counts["queued"] or counts["polling"] or counts["downloading"] or self.busy)

    # --- downloads ------------------------------------------------------------------------

    def _downloads_start(self, task: Task, assets: list[Asset]) -> None:
        """Success seen: queue its downloads at once, ahead of any further polling."""
        log.info("provider=%s task_id=%s: succeeded with %d asset(s) to download", task.provider,
                 task.task_id, len(assets), extra=task_fields(task.provider, task.task_id, State.DOWNLOADING))
        for asset in assets:
            self.queue.put_nowait((task.pk, asset.idx))

    def _disk_full(self, error: str) -> None:
        """No space for staging or the archive: every download pauses; nothing fails for it."""
        log.error("disk full: %s; downloads pause for %.0fs, polling goes on", error, DISK_FULL_PAUSE)
        self.state.set_health("disk", "full", error)
        self.disk_was_full = True
        self.paused_until = time.monotonic() + DISK_FULL_PAUSE

    async def _worker(self) -> None:
        while not self.stopping.is_set():
            if (wait := self.paused_until - time.monotonic()) > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            try:
                pk, idx = await asyncio.wait_for(self.queue.get(), 0.5)
            except TimeoutError:
                continue
            self.busy += 1
            try:
                if await self.archiver.archive(pk, idx):
                    self.finished += 1
                if self.disk_was_full and self.paused_until < time.monotonic():
                    self.disk_was_full = False
                    self.state.set_health("disk", "ok")
            except Exception:
                log.exception("unexpected error archiving asset %d of task #%d; it will be retried", idx, pk)
                self._requeue(pk, idx, REQUEUE_AFTER)
            finally:
                self.busy -= 1

    def _requeue(self, pk: int, idx: int, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.queue.put_nowait, (pk, idx))

    async def _ask_once(self, provider: str, task_id: str) -> TaskStatus | None:
        poller = self.pollers.get(provider)
        return await poller.ask_once(task_id) if poller else None

    async def _refresh_url(self, provider: str, task_id: str, url: str) -> str | None:
        poller = self.pollers.get(provider)
        return await poller.refresh_url(task_id, url) if poller else None
