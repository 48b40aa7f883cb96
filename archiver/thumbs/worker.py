"""The thumbnail worker (its own small queue, and one child process: process.py) and the backfill from the store.

The worker is handed a file it owns (staging.py links it before the store takes the staged file),
so it never downloads anything and never holds up a download or a poll: when its queue is full
an asset is skipped. While nothing is queued, its idle hook has a turn (the daemon's: catchup.py makes
the thumbnails skipped so). A failure is logged and told to `unmade` (so the catch-up does not try it
again; `archiver index --thumbnails` may); it never touches the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from archiver.archive_format.keys import INDEX_PREFIX, THUMBS_PREFIX, is_sidecar, sidecar_key, thumb_key
from archiver.archive_format.media import content_type_of_key, media_of
from archiver.storage import Storage
from archiver.thumbs.make import NoPoster, Thumb
from archiver.thumbs.process import ChildDied, ThumbProcess

log = logging.getLogger(__name__)

WEBP_TYPE = "image/webp"
QUEUE = 32  # assets waiting for a thumbnail; more are skipped (backfill makes theirs)
KINDS = ("image", "video")
IDLE = 60.0  # seconds without a thumbnail after which the child process exits; the next one starts it again
QUIET = 60.0  # seconds between two idle turns when the last had nothing to do

Made = Callable[[str, Thumb], Awaitable[None]]  # told of each thumbnail written: the asset key, the thumbnail
Unmade = Callable[[str], Awaitable[None]]  # told of each asset whose thumbnail cannot be made: its key
# Called while nothing is queued, with the worker; returns the seconds to rest before its next turn, or None
# when it has nothing to do now (its next turn comes after `quiet`, or at once after a skip).
Idle = Callable[["Thumbnailer"], Awaitable[float | None]]


@dataclass(frozen=True)
class Job:
    key: str  # the asset's key
    media: str
    path: Path  # ours: removed once the thumbnail is made or given up


class Thumbnailer:
    """Makes thumbnails one at a time in a child process of its own; `run` is the daemon's loop for it."""

    def __init__(self, storage: Storage, size: int, made: Made | None = None, *, unmade: Unmade | None = None,
                 idle: Idle | None = None, queue: int = QUEUE, quiet: float = QUIET) -> None:
        self.storage = storage
        self.size = size
        self.made = made
        self.unmade = unmade
        self.idle = idle
        self.quiet = quiet
        self.idle_at = 0.0  # time.monotonic() of the idle hook's next turn
        self.idle_found_nothing = True
        self.worked_at = time.monotonic()  # of the last thumbnail made or given up
        self.queue: asyncio.Queue[Job] = asyncio.Queue(queue)
        self.process = ThumbProcess()
        self.loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.loop = asyncio.create_task(self.run(), name="thumbnails")

    async def stop(self, deadline: float, finish: bool = False) -> None:
        """Make the queued thumbnails until `deadline` (time.monotonic()), then stop; with `finish` (--burst), the
        idle hook's turns too until it has nothing left. The rest wait for the next start."""
        if self.loop is None:
            return
        when = asyncio.get_running_loop().time() + max(0.0, deadline - time.monotonic())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(when):
                await self.queue.join()
        self.loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.loop
        if finish and self.idle is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(when):
                    while await self._idle_turn() is not None:
                        pass
            await self.process.close()

    def offer(self, key: str, media: str, path: Path) -> None:
        """Queue a thumbnail of `path` (which becomes ours) for the asset at `key`; never waits."""
        if media not in KINDS:
            path.unlink(missing_ok=True)
            return
        if self.loop is None:  # the first one starts the loop, on the daemon's event loop
            self.start()
        try:
            self.queue.put_nowait(Job(key, media, path))
        except asyncio.QueueFull:
            later = "made when the worker is idle" if self.idle else "`archiver index --thumbnails` makes it"
            log.warning("%s: no thumbnail now, the thumbnail queue is full; %s", key, later)
            path.unlink(missing_ok=True)
            if self.idle_found_nothing:  # its turn comes as soon as the queue is empty (a rest is kept)
                self.idle_at = 0.0

    async def run(self) -> None:
        try:
            while True:
                job = await self._next()
                if job is None:
                    continue
                try:
                    await self.one(job.key, job.media, job.path)
                finally:
                    job.path.unlink(missing_ok=True)
                    self.queue.task_done()
        finally:
            while not self.queue.empty():  # a stop: what is left waits for the next start's catch-up
                self.queue.get_nowait().path.unlink(missing_ok=True)
            await self.process.close()

    async def _next(self) -> Job | None:
        """The next queued asset; None once the idle hook had its turn, or a wait found nothing queued."""
        if self.queue.empty() and self.idle is not None and self.idle_at <= time.monotonic():
            rest = await self._idle_turn()
            self.idle_found_nothing = rest is None
            self.idle_at = time.monotonic() + (self.quiet if rest is None else rest)
            return None
        wait = IDLE if self.idle is None else min(IDLE, max(0.0, self.idle_at - time.monotonic()))
        try:
            async with asyncio.timeout(wait):
                return await self.queue.get()
        except TimeoutError:
            if time.monotonic() - self.worked_at >= IDLE:  # nothing to do for a while: the child's memory goes back
                await self.process.close()
            return None

    async def _idle_turn(self) -> float | None:
        assert self.idle is not None
        try:
            return await self.idle(self)
        except Exception:  # a bug there must not end the worker: the queue still needs it
            log.exception("thumbnails: the idle turn failed; trying again in %gs", self.quiet)
            return None

    async def one(self, key: str, media: str, path: Path) -> bool:
        """Make and store the thumbnail of one asset; False (and a log line) when there is none."""
        thumb = await self.make(key, media, path)
        return thumb is not None and await self.keep(key, thumb)

    async def make(self, key: str, media: str, path: Path) -> Thumb | None:
        """The thumbnail of the asset at `key` from its file; None when it cannot be made (logged, and
        `unmade` told, so that the idle catch-up does not try it again)."""
        try:
            return await self.process.make(path, media, self.size)
        except NoPoster as e:
            log.info("%s: no thumbnail: %s", key, e)
        except ChildDied as e:  # the next thumbnail gets a new child
            log.warning("%s: no thumbnail: %s; `archiver index --thumbnails` makes it", key, e)
        except Exception as e:  # Unreadable: Pillow's or FFmpeg's error for a bad file (a decompression bomb, too)
            log.warning("%s: no thumbnail: the file cannot be read as %s (%s)", key, media, e)
        finally:
            self.worked_at = time.monotonic()
        await self.given_up(key)
        return None

    async def given_up(self, key: str) -> None:
        if self.unmade is None:
            return
        try:
            await self.unmade(key)
        except Exception as e:  # a state outage: the catch-up may try it once more
            log.warning("%s: not recorded as without a thumbnail (%s)", key, e)

    async def keep(self, key: str, thumb: Thumb) -> bool:
        """Store the thumbnail of the asset at `key` and tell `made`; False (and a log line) if either fails."""
        try:
            await self.storage.put_bytes(thumb_key(key), thumb.data, content_type=WEBP_TYPE)
            if self.made is not None:
                await self.made(key, thumb)
        except Exception as e:  # a store or state outage: the backfill makes it later
            log.warning("%s: thumbnail not stored or not recorded (%s); `archiver index --thumbnails` makes it",
                        key, e)
            return False
        return True

    async def close(self) -> None:
        """End the child process (backfill and `verify --fix`, which do not `run`)."""
        await self.process.close()


def wants_thumb(key: str) -> str | None:
    """The media kind of an archived asset that gets a thumbnail, from its key; None for anything else."""
    if key.startswith((INDEX_PREFIX, THUMBS_PREFIX, "_failed/")) or is_sidecar(key):
        return None
    media = media_of(content_type_of_key(key), None)
    return media if media in KINDS else None


@contextlib.asynccontextmanager
async def streamed(storage: Storage, key: str, scratch: Path) -> AsyncIterator[Path]:
    """The stored asset at `key`, streamed to a temp file in `scratch` that goes at the end of the block."""
    fd, name = await asyncio.to_thread(tempfile.mkstemp, suffix=".asset", dir=scratch)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in storage.read(key):
                await asyncio.to_thread(out.write, chunk)
        yield path
    finally:
        await asyncio.to_thread(path.unlink, missing_ok=True)


async def thumb_from_store(thumbs: Thumbnailer, key: str, media: str, scratch: Path) -> bool:
    """One asset's thumbnail made again from the store: the asset streamed to a temp file, then made."""
    async with streamed(thumbs.storage, key, scratch) as path:
        return await thumbs.one(key, media, path)


async def backfill(thumbs: Thumbnailer, scratch: Path, progress: Callable[[int, int], None] | None = None,
                   ) -> tuple[int, int, int]:
    """Every missing thumbnail, made from the store; (made, failed, already there)."""
    listed = {item.key async for item in thumbs.storage.list()}
    # An asset counts once its sidecar is there (docs/design.md, commit points).
    keys = [(k, m) for k in sorted(listed) if (m := wants_thumb(k)) and sidecar_key(k) in listed]
    missing = [(k, m) for k, m in keys if thumb_key(k) not in listed]
    made = failed = 0
    for n, (key, media) in enumerate(missing, 1):
        try:
            ok = await thumb_from_store(thumbs, key, media, scratch)
        except FileNotFoundError:
            ok = False  # deleted since the listing
        made, failed = made + ok, failed + (not ok)
        if progress:
            progress(n, len(missing))
    return made, failed, len(keys) - len(missing)
