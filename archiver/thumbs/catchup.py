"""The thumbnail worker's catch-up: while nothing is queued, the thumbnails the state DB says are missing.

Those are the assets skipped on a full queue, those still queued when the daemon stopped, and those
archived with thumbnails off. Each is made from the store, never from the provider, one at a time,
newest first, resting between two as long as the last one took: the worker's child then uses at most
half a core, and a staged asset offered meanwhile goes first. An asset whose thumbnail cannot be made
is marked in the state DB (`thumb_failed`), so it is tried once; `archiver index --thumbnails` may try it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from archiver.archive_format.media import media_of
from archiver.errors import StateUnavailable
from archiver.files import private_dir
from archiver.state import StateStore
from archiver.thumbs.worker import KINDS, Thumbnailer, streamed

log = logging.getLogger(__name__)

BATCH = 8  # assets read from the state DB at a time
REST = 1.0  # after each thumbnail, rest this many times as long as it took


class CatchUp:
    """The worker's idle hook (worker.Idle): one missing thumbnail per turn, from the store."""

    def __init__(self, state: StateStore, scratch: Path) -> None:
        self.state = state
        self.scratch = scratch  # staging's thumbs/ folder: emptied at each start
        self.todo: list[tuple[str, str]] = []  # (key, content type), newest first

    async def __call__(self, thumbs: Thumbnailer) -> float | None:
        """Make one missing thumbnail; returns the seconds to rest before the next turn, None when nothing is
        missing or the store or the state DB failed (the worker's next look comes a while later)."""
        if not self.todo:
            try:
                self.todo = await self.state.missing_thumbs(BATCH)
            except StateUnavailable:
                return None  # the heartbeat reports the outage
            if not self.todo:
                return None
        key, content_type = self.todo.pop(0)
        media = media_of(content_type, None)
        if media not in KINDS:
            await thumbs.given_up(key)
            return 0.0
        started = time.monotonic()
        try:
            if not self.scratch.is_dir():
                await asyncio.to_thread(private_dir, self.scratch)
            async with streamed(thumbs.storage, key, self.scratch) as path:
                thumb = await thumbs.make(key, media, path)
        except FileNotFoundError:
            log.warning("%s: no thumbnail: the asset is not in the store", key)
            await thumbs.given_up(key)
            return 0.0
        except Exception as e:  # the store out of reach, or staging full: the next look tries again
            log.warning("%s: no thumbnail now: the asset cannot be read from the store (%s)", key, e)
            self.todo.clear()
            return None
        if thumb is not None and not await thumbs.keep(key, thumb):
            self.todo.clear()  # the store or the state DB failed: so would the rest
            return None
        return REST * (time.monotonic() - started)
