"""The daemon: one object owning intake, pollers and download workers (design.md §5, §9).

`run()` works until SIGTERM/SIGINT; with `burst=True` it returns once the inbox is read
and no task is left in flight, which makes end-to-end tests deterministic.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from archiver.config import Config
from archiver.download import Downloader, discard, redact
from archiver.errors import DiskFull, PermanentError, TransientError, UrlExpired
from archiver.inbox import InboxReader
from archiver.logs import task_fields
from archiver.model import Phase, State
from archiver.naming import KeyFields, choose_ext, content_type_for, failed_key, media_for, render_key
from archiver.pacing import ProviderHttp, TokenBucket
from archiver.poller import EntryPoller
from archiver.providers import PROVIDERS
from archiver.sidecar import asset_sidecar, failed_record
from archiver.state import Asset, StateDB, Task
from archiver.storage import open_storage
from archiver.systemd import Notifier
from archiver.urlguard import UrlGuard, guarded_connector

log = logging.getLogger(__name__)

INBOX_TICK = 0.2  # a new inbox line is noticed within this many seconds
REQUEUE_AFTER = 30.0  # a download that ran out of retries waits this long, then tries again
MAX_ROUNDS = 3  # ...this many times before the task fails with download_failed
POLL_DRAIN = 3.0  # seconds a poll in flight may take to finish at shutdown  # seconds between STATUS= lines to systemd


def state_path(config: Config) -> Path:
    return config.state_dir / "archiver.db"


class Daemon:
    def __init__(self, config: Config, *, burst: bool = False, seed: int | None = None) -> None:
        self.config = config
        self.burst = burst
        self.rng = random.Random(seed)
        self.staging = config.state_dir / "staging"
        self.stopping = asyncio.Event()
        self.queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self.rounds: dict[tuple[int, int], int] = {}
        self.busy = 0
        self.storage_failing = False
        self.refreshed: set[tuple[int, int]] = set()  # assets whose URL was asked for again
        self.paused_until = 0.0  # downloads wait until then after a disk-full error
        self.disk_was_full = False
        self.notifier = Notifier.from_env()

    async def run(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        self.state = StateDB(state_path(self.config))
        self.state.clear_health()
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
                self.downloader = Downloader(downloads, max_bytes=dl.max_bytes, per_host=dl.per_host,
                                             check_url=guard.check_url)
                self.pollers = self._pollers(api)
                await self._main()
        finally:
            await self.storage.close()
            self.state.close()

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: no new work; finishing downloads in flight")
            self.notifier.stopping()
            self.stopping.set()

    def _pollers(self, api: aiohttp.ClientSession) -> dict[str, EntryPoller]:
        pollers = {}
        for name, entry in self.config.providers.items():
            provider = PROVIDERS[entry.type](entry)
            http = ProviderHttp(name, api, TokenBucket(entry.requests_per_second))
            pollers[name] = EntryPoller(entry, provider, http, self.state, self._downloads_start,
                                        self._write_failed, self.rng)
        return pollers

    async def _main(self) -> None:
        self._recover()
        reader = InboxReader(self.config.inbox.path, self.state.inbox_position(),
                             self.config.providers.keys(), self.config.inbox.default_provider)
        intake = [asyncio.create_task(self._intake(reader), name="inbox")]
        intake += [asyncio.create_task(p.run(), name=f"poll:{n}") for n, p in self.pollers.items()]
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
            await self._drain(workers, deadline)
            watchdog.cancel()

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
                    self.notifier.status(" ".join(f"{k} {v}" for k, v in self.state.counts().items()))
                    checked = now
            except OSError as e:
                log.error("inbox %s cannot be read: %s; retrying", self.config.inbox.path, e)
            except Exception:
                # Intake must outlive any one bad moment (a locked or full state disk).
                log.exception("inbox: unexpected error; retrying")
            if self.burst and self._idle():
                self.stop()
            await asyncio.sleep(INBOX_TICK)

    def _pick_up_retried(self, since: float) -> None:
        """Tasks `archiver retry` put back in the queue, from another process."""
        for pk in self.state.queued_since(since):
            if not any(pk in poller.tracked for poller in self.pollers.values()):
                self._poll(self.state.task(pk))

    def _read_inbox(self, reader: InboxReader) -> None:
        batch = reader.read()
        if batch.position is None or (batch.position == self.state.inbox_position() and not batch.rejects):
            return
        for bad in batch.rejects:
            log.error("inbox line %d rejected: %s", bad.line_no, bad.reason, extra={"reason": "bad_line"})
        for task in self.state.ingest(batch.refs, batch.rejects, batch.position):
            log.info("provider=%s task_id=%s: queued", task.provider, task.task_id,
                     extra=task_fields(task.provider, task.task_id, State.QUEUED))
            self._poll(task)

    def _idle(self) -> bool:
        counts = self.state.counts()
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
        log.error("disk full: %s; downloads pause for %.0fs, polling goes on", error, REQUEUE_AFTER)
        self.state.set_health("disk", "full", error)
        self.disk_was_full = True
        self.paused_until = time.monotonic() + REQUEUE_AFTER

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
                await self._archive(pk, idx)
                if self.disk_was_full and self.paused_until < time.monotonic():
                    self.disk_was_full = False
                    self.state.set_health("disk", "ok")
            except Exception:
                log.exception("unexpected error archiving asset %d of task #%d; it will be retried", idx, pk)
                self._requeue(pk, idx)
            finally:
                self.busy -= 1

    def _requeue(self, pk: int, idx: int) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(REQUEUE_AFTER, self.queue.put_nowait, (pk, idx))

    async def _archive(self, pk: int, idx: int) -> None:
        task, asset = self.state.task(pk), self.state.asset(pk, idx)
        if task.state != State.DOWNLOADING or asset.state == "archived":
            return
        fields = task_fields(task.provider, task.task_id, State.DOWNLOADING)
        staged = self.staging / f"{pk}-{idx}.part"
        try:
            fetched = await self.downloader.fetch(asset.url, staged)
        except PermanentError as e:
            if isinstance(e, UrlExpired) and await self._fresh_url(task, asset):
                return
            log.error("provider=%s task_id=%s: download of %s failed: %s", task.provider, task.task_id,
                      redact(asset.url), e, extra=fields | {"reason": e.reason})
            staged.unlink(missing_ok=True)
            await self._write_failed(self.state.failed(pk, e.reason, message=str(e)))
            return
        except DiskFull as e:
            self._disk_full(str(e))
            await self._retry_later(task, asset, str(e), counts=False)
            return
        except TransientError as e:
            await self._retry_later(task, asset, str(e), counts=True)
            return
        downloaded_at = time.time()
        ext = choose_ext(fetched.head, fetched.content_type, asset.url)
        media = media_for(ext, task.media)
        entry = self.config.providers[task.provider]
        count = self.state.asset_count(pk)
        date = dt.datetime.fromtimestamp(task.success_seen_at or downloaded_at, dt.UTC)
        # Commit point: the key is decided once and stored before anything is written under it.
        key = self.state.set_key(pk, idx, render_key(self.config.storage.layout, KeyFields(
            provider=task.provider, provider_type=entry.type, task_id=task.task_id, index=idx,
            count=count, ext=ext, media=media, model=task.model, date=date)))
        content_type = content_type_for(ext)
        try:
            archived_at = await self._store(key, staged, content_type, fetched.sha256, asset.key is not None,
                                            lambda at: asset_sidecar(
                task, entry, asset, key=key, count=count, media=media, content_type=content_type,
                size=fetched.size, sha256=fetched.sha256, downloaded_at=downloaded_at, archived_at=at))
        except TransientError as e:
            # The store is down or full: the asset waits, however long that takes.
            if isinstance(e, DiskFull):
                self._disk_full(str(e))
            self.storage_failing = True
            self.state.set_health("storage", "failing", str(e))
            await self._retry_later(task, asset, f"storage: {e}", counts=False)
            return
        if self.storage_failing:
            self.storage_failing = False
            self.state.set_health("storage", "ok")
        done = self.state.archived(pk, idx, size=fetched.size, sha256=fetched.sha256,
                                   content_type=content_type, downloaded_at=downloaded_at,
                                   archived_at=archived_at)
        discard(staged)
        log.info("provider=%s task_id=%s: archived %s (%d bytes)", task.provider, task.task_id, key,
                 fetched.size, extra=fields)
        if done:
            log.info("provider=%s task_id=%s: archived", task.provider, task.task_id,
                     extra=task_fields(task.provider, task.task_id, State.ARCHIVED))

    async def _fresh_url(self, task: Task, asset: Asset) -> bool:
        """Before url_expired is final, ask the provider once more: it may hand out a fresh URL."""
        if (task.pk, asset.idx) in self.refreshed or task.provider not in self.pollers:
            return False
        self.refreshed.add((task.pk, asset.idx))
        status = await self.pollers[task.provider].ask_once(task.task_id)
        if status is None or status.phase != Phase.SUCCEEDED or asset.idx >= len(status.urls):
            return False
        if status.urls[asset.idx] == asset.url:
            return False
        log.info("provider=%s task_id=%s: result URL %d expired; the provider gave a fresh one",
                 task.provider, task.task_id, asset.idx, extra=task_fields(task.provider, task.task_id))
        self.state.set_url(task.pk, asset.idx, status.urls[asset.idx])
        self.queue.put_nowait((task.pk, asset.idx))
        return True

    async def _store(self, key: str, staged: Path, content_type: str, sha256: str, again: bool,
                     sidecar: Callable[[float], bytes]) -> float:
        """Write the asset, then its sidecar; skip what a run before a crash already wrote.

        Commit point: the sidecar is written last, so its presence means the asset is complete.
        Skipping a write that is already there keeps one object (one S3 version) per key; only
        a key stored by an earlier attempt (`again`) can have one, so only then do we look.
        """
        if not (again and await self._stored(key, sha256)):
            await self.storage.put_file(key, staged, content_type=content_type, sha256=sha256)
        archived_at = time.time()
        if not (again and await self.storage.exists(key + ".json")):
            await self.storage.put_bytes(key + ".json", sidecar(archived_at), content_type="application/json")
        return archived_at

    async def _stored(self, key: str, sha256: str) -> bool:
        try:
            return (await self.storage.stat(key)).sha256 == sha256
        except FileNotFoundError:
            return False

    async def _retry_later(self, task: Task, asset: Asset, error: str, *, counts: bool) -> None:
        key = (task.pk, asset.idx)
        self.rounds[key] = self.rounds.get(key, 0) + counts
        if self.rounds[key] >= MAX_ROUNDS:
            del self.rounds[key]
            discard(self.staging / f"{task.pk}-{asset.idx}.part")
            await self._write_failed(self.state.failed(task.pk, "download_failed", message=error))
            return
        self.state.asset_error(task.pk, asset.idx, error)
        log.warning("provider=%s task_id=%s: %s; retrying in %.0fs", task.provider, task.task_id, error,
                    REQUEUE_AFTER, extra=task_fields(task.provider, task.task_id, State.DOWNLOADING))
        self._requeue(task.pk, asset.idx)

    async def _write_failed(self, task: Task) -> None:
        """Leave _failed/{provider}/{task_id}.json so the archive tells the whole story."""
        log.warning("provider=%s task_id=%s: failed (%s) %s", task.provider, task.task_id, task.reason,
                    task.message or "", extra=task_fields(task.provider, task.task_id, State.FAILED, task.reason))
        entry = self.config.providers[task.provider]
        record = failed_record(task, entry, self.state.assets(task.pk), time.time())
        try:
            await self.storage.put_bytes(failed_key(task.provider, task.task_id), record,
                                         content_type="application/json")
        except (TransientError, OSError) as e:
            log.error("provider=%s task_id=%s: could not write its _failed record: %s",
                      task.provider, task.task_id, e)

