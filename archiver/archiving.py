"""One asset's way into the archive: download, key, asset, sidecar, state (docs/design.md, commit points).

Trouble never escapes `archive`: a permanent failure ends the task (with its _failed
record), a transient one hands the asset back to its scheduler (workers.py) to try again later.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from archiver import datauri
from archiver.archive_format.keys import KeyFields, failed_key, render_key, sidecar_key
from archiver.archive_format.media import JSON_TYPE, choose_ext, content_type_for, media_for
from archiver.archive_format.sidecar import asset_sidecar, failed_record
from archiver.config import Config
from archiver.download import Downloader, Fetched, redact
from archiver.errors import (AlreadyStored, DiskFull, DownloadFailed, DownloadInterrupted, PermanentError,
                             StorageUnavailable, TransientError, UrlExpired)
from archiver.logs import task_fields
from archiver.model import Phase, TaskStatus
from archiver.model import TaskState
from archiver.recorder import Recorder
from archiver.staging import Staging
from archiver.state import Asset, StateStore, Task
from archiver.storage import Storage
from archiver.thumbs.embedded import probe
from archiver.thumbs.worker import Thumbnailer

log = logging.getLogger(__name__)

# A download that ran out of retries waits download.retry_after, then tries again, up to
MAX_ROUNDS = 3  # this many times before the task fails with download_failed


class Asker(Protocol):
    """A provider entry's poller, asked again about a task that already succeeded (poller.py)."""

    async def ask_once(self, task_id: str) -> TaskStatus | None: ...
    async def refresh_url(self, task_id: str, url: str) -> str | None: ...


class Scheduler(Protocol):
    """Who runs the Archivist (workers.py): it tries an asset again later, and pauses every download."""

    def requeue(self, pk: int, idx: int, delay: float) -> None: ...
    async def disk_full(self, error: str) -> None: ...


@dataclass(eq=False)
class Downloading:
    """A downloading task as whoever queued its assets read it; its queued assets share this."""

    task: Task
    count: int | None = None  # the task's asset count (keys and sidecars name it); None: read when first needed
    ended: bool = False  # this daemon failed the task: its other queued assets are let go unread


class Archivist:
    """Archives assets; its scheduler queues them and owns the pause on a full disk."""

    def __init__(self, config: Config, state: StateStore, storage: Storage, downloader: Downloader,
                 staging: Staging, *, askers: Mapping[str, Asker], scheduler: Scheduler,
                 recorder: Recorder | None = None, thumbnailer: Thumbnailer | None = None) -> None:
        self.config = config
        self.state = state
        self.storage = storage
        self.downloader = downloader
        self.staging = staging
        self.askers = askers  # by entry name
        self.scheduler = scheduler
        # Fresh links (a provider's download-url ability) to fetch an expired asset from; its key and sidecar
        # keep the original URL. Kept in memory only: they live 20 minutes.
        self.fetch_from: dict[tuple[int, int], str] = {}
        self.rounds: dict[tuple[int, int], int] = {}
        self.refreshed: set[tuple[int, int]] = set()  # assets whose URL was asked for again
        self.linked: set[tuple[int, int]] = set()  # … and whose fresh link was asked for
        # Downloads complete in staging whose state write failed (the state DB was down): not fetched again.
        self.staged: dict[tuple[int, int], tuple[Fetched, float]] = {}
        # data: URIs of answers, by asset: the state DB keeps only their elided form (datauri.py).
        self.inline: dict[tuple[int, int], str] = {}
        self.storage_failing = False
        self.storage_failing_since: float | None = None  # first failed write of the current outage
        self.recorder = recorder or Recorder()
        self.thumbnailer = thumbnailer
        self.started = time.time()

    async def archive(self, job: Downloading, asset: Asset) -> bool:
        """Download one asset of `job`'s task and store it with its sidecar; True once archived.

        Trouble is recorded, never raised. `job` and `asset` are as the caller last read them: no
        state read here, one asset being the hot path.
        """
        task, pk, idx = job.task, job.task.pk, asset.idx
        if job.ended or task.state != TaskState.DOWNLOADING or asset.state == "archived":
            self.let_go(pk, idx)
            return False
        fields = task_fields(task.provider, task.task_id, TaskState.DOWNLOADING)
        staged = self.staging.part(pk, idx)
        started = time.monotonic()
        if (pk, idx) in self.staged and staged.exists():
            fetched, downloaded_at = self.staged[(pk, idx)]
            return await self._keep(job, asset, staged, fetched, downloaded_at)
        try:
            fetched = await self._fetch(task, asset, staged)
        except PermanentError as e:
            if isinstance(e, UrlExpired) and await self._fresh_url(task, asset):
                self.recorder.download("retry")
                return False
            self.recorder.download("failed")
            self.fetch_from.pop((pk, idx), None)
            self.inline.pop((pk, idx), None)
            log.error("provider=%s task_id=%s: download of %s failed: %s", task.provider, task.task_id,
                      redact(asset.url), e, extra=fields | {"reason": e.reason})
            await self._fail(job, e.reason, str(e))
            return False
        except DiskFull as e:
            self.recorder.download("retry")
            await self.scheduler.disk_full(str(e))
            await self._retry_later(job, asset, str(e), counts=False)
            return False
        except TransientError as e:
            self.recorder.download("retry")
            await self._retry_later(job, asset, str(e), counts=True)
            return False
        self.recorder.download("ok", fetched.size, time.monotonic() - started)
        downloaded_at = time.time()
        self.staged[(pk, idx)] = (fetched, downloaded_at)
        return await self._keep(job, asset, staged, fetched, downloaded_at)

    async def _keep(self, job: Downloading, asset: Asset, staged: Path, fetched: Fetched,
                    downloaded_at: float) -> bool:
        """A complete download in staging into the store, then the state DB."""
        task, pk, idx = job.task, job.task.pk, asset.idx
        if job.count is None:  # queued from a poll's success: read once for the task, not per asset
            job.count = await self.state.asset_count(pk)
        count = job.count
        fields = task_fields(task.provider, task.task_id, TaskState.DOWNLOADING)
        ext = choose_ext(fetched.head, fetched.content_type, asset.url)
        media = media_for(ext, task.media)
        entry = self.config.providers[task.provider]
        date = dt.datetime.fromtimestamp(task.success_seen_at or downloaded_at, dt.UTC)
        # Commit point: the key is decided once and stored before anything is written under it.
        key = await self.state.set_key(pk, idx, render_key(self.config.storage.layout, KeyFields(
            provider=task.provider, provider_type=entry.type, task_id=task.task_id, index=idx,
            count=count, ext=ext, media=media, model=task.model, date=date)))
        content_type = content_type_for(ext)
        # What the file says of itself, for its sidecar; and the thumbnail worker's own name for the
        # file, made now because the store takes the staged name away (staging.py).
        said, thumb_file = await asyncio.to_thread(self._look, staged, media, pk, idx)
        try:
            archived_at = await self._store(key, staged, content_type, fetched.sha256, asset.key is not None,
                                            lambda at: asset_sidecar(
                task, entry, asset, key=key, count=count, media=media, content_type=content_type,
                size=fetched.size, sha256=fetched.sha256, downloaded_at=downloaded_at, archived_at=at, probe=said))
        except TransientError as e:
            if thumb_file is not None:
                thumb_file.unlink(missing_ok=True)
            # The store is down or full: the asset waits, however long that takes.
            if isinstance(e, DiskFull):
                await self.scheduler.disk_full(str(e))
            self._store_failed()
            self.storage_failing = True
            await self.state.set_health("storage", "failing", str(e))
            await self._retry_later(job, asset, f"storage: {e}", counts=False)
            return False
        self.storage_failing_since = None
        if self.storage_failing:
            self.storage_failing = False
            await self.state.set_health("storage", "ok")
        try:
            done = await self.state.archived(pk, idx, size=fetched.size, sha256=fetched.sha256,
                                             content_type=content_type, downloaded_at=downloaded_at,
                                             archived_at=archived_at, width=said["width"], height=said["height"])
        except BaseException:
            if thumb_file is not None:  # the next attempt links the staged file again
                thumb_file.unlink(missing_ok=True)
            raise
        if thumb_file is not None and self.thumbnailer is not None:
            self.thumbnailer.offer(key, media, thumb_file)  # never waits: a full queue skips it
        self.let_go(pk, idx)
        log.info("provider=%s task_id=%s: archived %s (%d bytes)", task.provider, task.task_id, key,
                 fetched.size, extra=fields)
        if done:
            self.recorder.finished(task.provider, "archived")
            self.recorder.success_to_archived(archived_at - (task.success_seen_at or downloaded_at))
            log.info("provider=%s task_id=%s: archived", task.provider, task.task_id,
                     extra=task_fields(task.provider, task.task_id, TaskState.ARCHIVED))
        return True

    def _look(self, staged: Path, media: str, pk: int, idx: int) -> tuple[dict[str, Any], Path | None]:
        """(in a thread) The staged file's own metadata, and a link to it for the thumbnail worker."""
        wanted = self.thumbnailer is not None and media in ("image", "video")
        return probe(staged, media), self.staging.for_thumbnail(pk, idx) if wanted else None

    def let_go(self, pk: int, idx: int) -> None:
        """Forget an asset this daemon no longer works on (ended, or another daemon's now), and its staged bytes."""
        self.staged.pop((pk, idx), None)
        self.fetch_from.pop((pk, idx), None)
        self.inline.pop((pk, idx), None)
        self.rounds.pop((pk, idx), None)
        self.refreshed.discard((pk, idx))
        self.linked.discard((pk, idx))
        self.staging.discard(pk, idx)

    async def _fetch(self, task: Task, asset: Asset, staged: Path) -> Fetched:
        """The asset's bytes into staging: decoded from a data: URI, or downloaded."""
        if asset.url.startswith("data:"):
            uri = asset.url  # a whole URI stored before payloads were elided
            if datauri.is_elided(uri):
                uri = self.inline.get((task.pk, asset.idx)) or await self._inline_again(task, asset)
            return await asyncio.to_thread(datauri.save, uri, staged, self.downloader.max_bytes)
        return await self.downloader.fetch(self.fetch_from.get((asset.task, asset.idx), asset.url), staged)

    async def _ask_once(self, task: Task) -> TaskStatus | None:
        asker = self.askers.get(task.provider)
        return await asker.ask_once(task.task_id) if asker else None

    async def _inline_again(self, task: Task, asset: Asset) -> str:
        """An inline result whose payload memory lost (a restart, a crash): the provider is asked again."""
        status = await self._ask_once(task)
        if status is None:
            raise DownloadInterrupted(f"{asset.url}: asking the provider again for the inline result failed")
        uri = status.urls[asset.idx] if status.phase == Phase.SUCCEEDED and asset.idx < len(status.urls) else ""
        if not uri.startswith("data:") or datauri.is_elided(uri):
            raise DownloadFailed(f"{asset.url}: the provider no longer gives this inline result")
        self.inline[(task.pk, asset.idx)] = uri
        return uri

    async def _fresh_url(self, task: Task, asset: Asset) -> bool:
        """Before url_expired is final, ask the provider once more: it may hand out a fresh URL."""
        if (task.pk, asset.idx) in self.refreshed:
            # The fresh URL expired too: a provider-made link is the last thing to try, once.
            return (task.pk, asset.idx) not in self.linked and await self._fresh_link(task, asset)
        self.refreshed.add((task.pk, asset.idx))
        status = await self._ask_once(task)
        if status is None or status.phase != Phase.SUCCEEDED or asset.idx >= len(status.urls) \
                or status.urls[asset.idx] == asset.url:
            return await self._fresh_link(task, asset)
        log.info("provider=%s task_id=%s: result URL %d expired; the provider gave a fresh one",
                 task.provider, task.task_id, asset.idx, extra=task_fields(task.provider, task.task_id))
        fresh = status.urls[asset.idx]
        if fresh.startswith("data:"):
            self.inline[(task.pk, asset.idx)] = fresh  # the state DB keeps the elided form only
        await self.state.set_url(task.pk, asset.idx, datauri.elide(fresh))
        self.scheduler.requeue(task.pk, asset.idx, 0.0)  # a requeue reads the asset again: the new URL
        return True

    async def _fresh_link(self, task: Task, asset: Asset) -> bool:
        """A provider-made temporary link to the same file (a RefreshesUrls provider), fetched at once; never logged."""
        self.linked.add((task.pk, asset.idx))
        asker = self.askers.get(task.provider)
        link = await asker.refresh_url(task.task_id, asset.url) if asker else None
        if link is None:
            return False
        log.info("provider=%s task_id=%s: result URL %d expired; downloading it from a fresh link",
                 task.provider, task.task_id, asset.idx, extra=task_fields(task.provider, task.task_id))
        self.fetch_from[(task.pk, asset.idx)] = link
        self.scheduler.requeue(task.pk, asset.idx, 0.0)
        return True

    async def _store(self, key: str, staged: Path, content_type: str, sha256: str, again: bool,
                     sidecar: Callable[[float], bytes]) -> float:
        """Write the asset, then its sidecar; skip what a run before a crash (or another daemon) wrote.

        Commit point: the sidecar is written last, so its presence means the asset is complete.
        Writes are conditional (If-None-Match: *), so one key holds one object (one S3 version)
        whoever writes it. Only a key that holds other bytes is replaced on purpose: a write cut
        off before a crash, or an asset `verify --fix` put back to work.
        """
        found = await self._stored(key, sha256) if again else None
        sidecar_there = again and await self.storage.exists(sidecar_key(key))
        if found is not True:
            # The sidecar's write (same folder, next) makes the asset's name durable too.
            await self._put_asset(key, staged, content_type, sha256, replace=found is False,
                                  sync_folder=sidecar_there)
        archived_at = time.time()
        if not sidecar_there:
            try:
                await self.storage.put_bytes(sidecar_key(key), sidecar(archived_at), content_type=JSON_TYPE,
                                             if_absent=True)
                self.recorder.stored("ok")
            except AlreadyStored:
                pass  # another daemon archived the same asset a moment ago: its sidecar stands
        return archived_at

    async def _put_asset(self, key: str, staged: Path, content_type: str, sha256: str, *, replace: bool,
                         sync_folder: bool) -> None:
        try:
            await self.storage.put_file(key, staged, content_type=content_type, sha256=sha256, if_absent=not replace,
                                        sync_folder=sync_folder)
        except AlreadyStored:
            if not await self._stored(key, sha256):
                # Written meanwhile with other bytes; the next attempt finds it and replaces it.
                raise StorageUnavailable(f"{key}: another writer stored different bytes under this key") from None
            return  # the same bytes: ours from a retried request, or another daemon's
        self.recorder.stored("ok")

    async def _stored(self, key: str, sha256: str) -> bool | None:
        """True if the store holds these bytes under `key`, False if other bytes, None if nothing.

        Its own checksum, where it keeps one, wins over the sha256 we wrote beside the object,
        which a changed object may still carry."""
        try:
            info = await self.storage.stat(key)
        except FileNotFoundError:
            return None
        if (known := info.checksum or info.sha256) is None:  # local disk keeps no digest: read the object
            digest = hashlib.sha256()
            async for chunk in self.storage.read(key):
                digest.update(chunk)
            known = digest.hexdigest()
        return known == sha256

    async def _retry_later(self, job: Downloading, asset: Asset, error: str, *, counts: bool) -> None:
        task = job.task
        key = (task.pk, asset.idx)
        self.rounds[key] = self.rounds.get(key, 0) + counts
        if self.rounds[key] >= MAX_ROUNDS:
            del self.rounds[key]
            self.staged.pop(key, None)
            self.inline.pop(key, None)
            self.staging.discard(task.pk, asset.idx)
            await self._fail(job, "download_failed", error)
            return
        await self.state.asset_error(task.pk, asset.idx, error)
        retry_after = self.config.download.retry_after
        log.warning("provider=%s task_id=%s: %s; retrying in %gs", task.provider, task.task_id, error,
                    retry_after, extra=task_fields(task.provider, task.task_id, TaskState.DOWNLOADING))
        self.scheduler.requeue(task.pk, asset.idx, retry_after)

    async def _fail(self, job: Downloading, reason: str, message: str) -> None:
        """End the task for one asset; its other assets queued with `job` are let go without a state read."""
        failed = await self.state.failed(job.task.pk, reason, message=message)
        job.ended = True
        await self.write_failed(failed)

    async def write_failed(self, task: Task) -> None:
        """Leave _failed/{provider}/{task_id}.json so the archive tells the whole story."""
        log.warning("provider=%s task_id=%s: failed (%s) %s", task.provider, task.task_id, task.reason,
                    task.message or "", extra=task_fields(task.provider, task.task_id, TaskState.FAILED, task.reason))
        self.recorder.finished(task.provider, task.reason or "provider_failed")
        await self._put_record(task)

    async def write_due_records(self) -> None:
        """Write the _failed records a failing store (or a crash) kept from the archive."""
        # Not the ones failed a moment ago by a running daemon: that daemon is writing their record now.
        before = max(time.time() - self.config.download.retry_after, self.started)
        for task in await self.state.records_due(before=before):
            if not await self._put_record(task):
                return  # the store is still failing: try again on the next round

    async def _put_record(self, task: Task) -> bool:
        entry = self.config.providers.get(task.provider)
        if entry is None:
            return True  # its entry left the config; the record waits in the state DB
        record = failed_record(task, entry, await self.state.assets(task.pk), task.updated_at)
        try:
            await self.storage.put_bytes(failed_key(task.provider, task.task_id), record,
                                         content_type=JSON_TYPE)
        except (TransientError, OSError) as e:
            self._store_failed()
            log.error("provider=%s task_id=%s: could not write its _failed record (%s); retrying later",
                      task.provider, task.task_id, e, extra=task_fields(task.provider, task.task_id))
            return False
        self.recorder.stored("ok")
        self.storage_failing_since = None
        await self.state.record_written(task.pk)
        return True

    def _store_failed(self) -> None:
        self.recorder.stored("failed")
        self.storage_failing_since = self.storage_failing_since or time.time()
