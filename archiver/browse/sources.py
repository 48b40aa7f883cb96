"""Where day files come from: the state DB (normal), or the store's sidecars and _failed records.

The state source reads through the state's ArchiveReader (archiver/state/base.py), which
either backend provides on a read-only connection of its own; it is used from a worker
thread, so building a day never runs on the daemon's event loop.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from archiver.archive_format.days import Day, asset_entry, failed_entry, key_pattern, utc_day
from archiver.archive_format.keys import (FAILED_PREFIX, THUMBS_PREFIX, asset_of_sidecar, failed_key, is_sidecar,
                                          thumb_key)
from archiver.archive_format.media import media_of
from archiver.archive_format.sidecar import read_asset_entry, read_failed_entry
from archiver.config import Config
from archiver.model import utc_iso
from archiver.state import ArchiveReader, Fingerprint, IndexedAsset, IndexedFailure, open_reader
from archiver.storage import Storage

log = logging.getLogger(__name__)

__all__ = ["Fingerprint", "StateSource", "open_source", "read_store"]


def open_source(config: Config) -> StateSource:
    """The configured backend's state source: blocking (a PostgreSQL connect), so call it in a thread."""
    return StateSource(open_reader(config), {name: entry.type for name, entry in config.providers.items()})


class StateSource:
    """Day files from the state DB."""

    def __init__(self, reader: ArchiveReader, provider_types: dict[str, str]) -> None:
        self.reader = reader
        self.types = provider_types

    def close(self) -> None:
        self.reader.close()

    def fingerprints(self) -> dict[str, Fingerprint]:
        return self.reader.fingerprints()

    def day(self, date: str) -> Day:
        """One day: assets whose success was seen that UTC day, tasks that failed that day."""
        start = calendar.timegm(dt.date.fromisoformat(date).timetuple())
        days = self._collect(*self.reader.day(start, start + 86400))
        return days.get(date, Day(date))

    def each_day(self) -> Iterator[Day]:
        """Every day in date order, one at a time: memory holds one day, whatever the archive's size."""
        day: Day | None = None
        for record in self.reader.each():
            date = utc_day(record.seen)
            if day is None or day.date != date:
                if day is not None:
                    yield day
                day = Day(date)
            self._add(day, record)
        if day is not None:
            yield day

    async def stream(self) -> AsyncIterator[Day]:
        """`each_day`, each day read in a worker thread: the event loop never waits on the DB."""
        each = self.each_day()
        while (day := await asyncio.to_thread(next, each, None)) is not None:
            yield day

    def _collect(self, assets: Iterable[IndexedAsset], failed: Iterable[IndexedFailure]) -> dict[str, Day]:
        days: dict[str, Day] = {}
        for record in (*assets, *failed):
            date = utc_day(record.seen)
            self._add(days.setdefault(date, Day(date)), record)
        return days

    def _add(self, day: Day, r: IndexedAsset | IndexedFailure) -> None:
        if isinstance(r, IndexedFailure):
            day.failed.append(failed_entry(
                provider=r.provider, task_id=r.task_id, reason=r.reason, provider_code=r.code,
                provider_message=r.message, record=failed_key(r.provider, r.task_id), labels=r.labels))
            return
        day.assets.append(asset_entry(
            key=r.key, sidecar=r.key + ".json", provider=r.provider, provider_type=self.types.get(r.provider),
            task_id=r.task_id, index=r.idx, count=r.count, media=media_of(r.content_type, r.hint), model=r.model,
            prompt=r.prompt, labels=r.labels, content_type=r.content_type, bytes=r.bytes, sha256=r.sha256,
            archived_at=utc_iso(r.archived_at), thumb=r.thumb, width=r.width, height=r.height,
            placeholder=r.placeholder))


async def read_store(storage: Storage, layout: str, progress: Callable[[int, int], None] | None = None,
                     concurrency: int = 16) -> tuple[dict[str, Day], int]:
    """Every day from the sidecars and _failed records in the store; also how many were unreadable."""
    listed = [item.key async for item in storage.list()]
    thumbs = {k for k in listed if k.startswith(THUMBS_PREFIX)}
    keys = [k for k in listed if is_sidecar(k) or k.startswith(FAILED_PREFIX)]
    del listed
    pattern = key_pattern(layout)
    days: dict[str, Day] = {}
    bad = done = 0
    gate = asyncio.Semaphore(concurrency)

    async def one(key: str) -> None:
        nonlocal bad, done
        async with gate:
            try:
                _add(days, key, await storage.get(key), pattern, thumbs)
            except FileNotFoundError:
                pass  # deleted since the listing
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                bad += 1
                log.warning("%s: not a readable sidecar or record (%s); left out of the index", key, e)
            done += 1
            if progress:
                progress(done, len(keys))

    for start in range(0, len(keys), 1000):  # bounded: a million keys are not a million tasks at once
        await asyncio.gather(*(one(k) for k in keys[start:start + 1000]))
    return days, bad


def _add(days: dict[str, Day], key: str, data: bytes, pattern: Any, thumbs: set[str]) -> None:
    if key.startswith(FAILED_PREFIX):
        date, entry = read_failed_entry(key, data)
        days.setdefault(date, Day(date)).failed.append(entry)
    else:
        thumb = thumb_key(asset_of_sidecar(key))
        date, entry = read_asset_entry(key, data, pattern, thumb if thumb in thumbs else None)
        days.setdefault(date, Day(date)).assets.append(entry)
