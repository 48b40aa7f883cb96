"""Keeping the browse index current (docs/operations.md): the daemon's index loop and `archiver index`.

The archiving code does not report anything here. Each round the loop asks the state DB
(its own read-only connection to SQLite or PostgreSQL, in a thread) for a fingerprint per
day — counts, bytes and the newest change — and rebuilds only the days whose fingerprint
moved. A day file whose bytes are unchanged is not written again. Every file is one
whole-object put (atomic on both storage backends), so a reader sees the old file or the
new one. A failed write is logged and its day stays "moved", so the next round tries
again; no task ever waits on it. The search index holds closed days only: today's day file
is written every round, but its words touch no shard. The first round after a day closes (UTC
midnight, or a restart days later) folds the days since the manifest's `through` into the
shards, then moves `through`. A change to a day already folded in writes only the tokens whose
entries changed, into the shards they fall in (archiver/browse/search_index.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from importlib import resources
from dataclasses import dataclass
from typing import Any

from archiver.archive_format.days import Day, encode_days
from archiver.archive_format.keys import DAYS_KEY, PAGE_KEY, day_key
from archiver.archive_format.media import HTML_TYPE, JSON_TYPE
from archiver.archive_format.search import day_postings
from archiver.browse.search_index import Changes, SearchWriter, day_before, diff, stored_postings, utc_today
from archiver.browse.sources import Fingerprint, StateSource, open_source, read_store
from archiver.config import Config
from archiver.errors import TransientError
from archiver.storage import Storage

log = logging.getLogger(__name__)


def page() -> bytes:
    return resources.files("archiver.browse").joinpath("page.html").read_bytes()


class IndexWriter:
    """Writes day files, days.json and index.html, each only when its content changed."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.digests: dict[str, str] = {}  # day → sha256 of the file we know is stored
        self.summaries: dict[str, dict[str, Any]] = {}
        self.stored_summaries: list[dict[str, Any]] | None = None  # what days.json holds

    async def write_page(self) -> bool:
        """index.html when missing or not this version's page; True if written."""
        wanted = page()
        try:
            if await self.storage.get(PAGE_KEY) == wanted:
                return False
        except FileNotFoundError:
            pass
        await self.storage.put_bytes(PAGE_KEY, wanted, content_type=HTML_TYPE)
        return True

    async def load_days(self) -> dict[str, dict[str, Any]]:
        """The summaries days.json holds now (empty when missing or unreadable)."""
        try:
            doc = json.loads(await self.storage.get(DAYS_KEY))
            self.stored_summaries = list(doc["days"])
        except FileNotFoundError:
            self.stored_summaries = []
        except (ValueError, KeyError, TypeError) as e:
            log.warning("%s is unreadable (%s); it will be written again", DAYS_KEY, e)
            self.stored_summaries = []
        self.summaries = {s["date"]: s for s in self.stored_summaries}
        return self.summaries

    async def stored_day(self, date: str) -> bytes | None:
        """The day file the store holds now (its digest is kept), or None."""
        try:
            data = await self.storage.get(day_key(date))
        except FileNotFoundError:
            return None
        self.digests[date] = hashlib.sha256(data).hexdigest()
        return data

    async def write_day(self, day: Day, *, force: bool = False) -> bool:
        """Write one day file unless the store already holds these bytes; True if written."""
        # A big day is most of a MiB of JSON: encoded off the event loop, as the daemon's workers share it.
        return await self.put_day(day.date, await asyncio.to_thread(day.encode), day.summary(), force=force)

    async def put_day(self, date: str, data: bytes, summary: dict[str, Any], *, force: bool = False) -> bool:
        digest = hashlib.sha256(data).hexdigest()
        if not force:
            if date not in self.digests:
                await self.stored_day(date)
            if self.digests.get(date) == digest:
                self.summaries[date] = summary
                return False
        await self.storage.put_bytes(day_key(date), data, content_type=JSON_TYPE)
        self.digests[date] = digest
        self.summaries[date] = summary
        return True

    async def write_days_json(self, *, force: bool = False) -> bool:
        """days.json after the day files it lists, and only when a summary changed."""
        current = sorted((s for s in self.summaries.values() if s["assets"] or s["failed"]),
                         key=lambda s: s["date"], reverse=True)
        if current == self.stored_summaries and not force:
            return False
        await self.storage.put_bytes(DAYS_KEY, encode_days(current, time.time()), content_type=JSON_TYPE)
        self.stored_summaries = current
        return True


@dataclass
class Staged:
    """A day read this round, whose file is written once its search changes are."""

    date: str
    data: bytes
    summary: dict[str, Any]
    fingerprint: Fingerprint


BATCH = 4  # days staged (or folded) before their search changes are written: bounds what a catch-up round holds


class IndexLoop:
    """The daemon's index writer: one round every `index.every`, apart from the download workers.

    `today` gives the UTC date (`YYYY-MM-DD`): days before it are closed and go into the search shards.
    """

    def __init__(self, config: Config, storage: Storage, today: Callable[[], str] = utc_today) -> None:
        self.config = config
        self.today = today
        self.writer = IndexWriter(storage)
        self.search = SearchWriter(storage)
        self.staged: list[Staged] = []
        self.changes: Changes = {}
        self.known: dict[str, Fingerprint] = {}  # fingerprints of the days the store is current for
        self.source: StateSource | None = None
        self.page_written = False

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.round()
                except Exception as e:
                    # The index is a view: its trouble is logged and retried, never passed on.
                    log.error("index: %s; retrying in %.0fs", e, self.config.index.every,
                              exc_info=not isinstance(e, (TransientError, OSError)))
                await asyncio.sleep(self.config.index.every)
        finally:
            self.close()

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None  # a later round opens it again

    async def last_round(self) -> None:
        """One round more as a `--burst` run ends: what it archived is in the index when it returns,
        not a whole `index.every` later (by then the process is gone)."""
        try:
            await self.round()
        except Exception as e:
            log.error("index: %s; `archiver index` writes it", e,
                      exc_info=not isinstance(e, (TransientError, OSError)))
        finally:
            self.close()

    async def round(self) -> int:
        """Rewrite the days that moved since the last round; return how many files were written."""
        if self.source is None:
            self.source = await asyncio.to_thread(open_source, self.config)
            stored = await self.writer.load_days()
        else:
            stored = {}
        source = self.source
        if not self.page_written:
            await self.writer.write_page()
            self.page_written = True
        written = 0
        prints = await asyncio.to_thread(source.fingerprints)
        closed = day_before(self.today())  # the newest day that can no longer change, but for late writes
        if self.search.listed is None and not await self.search.load():
            written += await self.build_search(source, closed)
        self.staged, self.changes = [], {}  # what a failed round staged is computed again
        # newest first: what people open; with the days days.json lists, so one emptied while we were down is seen
        for date in sorted(set(prints) | set(self.known) | set(stored), reverse=True):
            now = prints.get(date, (0, 0, 0, 0, 0.0, 0.0, 0))
            if self.known.get(date) == now:
                continue
            if date not in self.known and _summary(date, now) == stored.get(date):
                self.known[date] = now  # days.json already shows this day as it is
                continue
            day = await asyncio.to_thread(source.day, date)
            await self.stage(day, now)
            if len(self.staged) >= BATCH:
                written += await self.flush()
        written += await self.flush()
        written += await self.fold(prints, closed)
        written += await self.writer.write_days_json()
        if written:
            log.info("index: %d file(s) written", written)
        return written

    async def stage(self, day: Day, fingerprint: Fingerprint) -> None:
        """Encode a moved day; if the shards hold it, record which of its tokens' entries changed since the
        store's version (what the shards were built from). A newer day (today) touches no shard."""
        data = await asyncio.to_thread(day.encode)
        if self.search.holds(day.date):  # rare: a late write, a task put back to work, a rebuild from the store
            new = await asyncio.to_thread(day_postings, day)
            old = await asyncio.to_thread(stored_postings, await self.writer.stored_day(day.date))
            diff(day.date, old, new, self.changes)
        self.staged.append(Staged(day.date, data, day.summary(), fingerprint))

    async def flush(self) -> int:
        """The staged days' search changes, then their day files: a crash between leaves the day "moved"."""
        written = await self.search.apply(self.changes) if self.changes else 0
        for s in self.staged:
            written += await self.writer.put_day(s.date, s.data, s.summary)
            self.known[s.date] = s.fingerprint
        self.staged, self.changes = [], {}
        return written

    async def fold(self, prints: dict[str, Fingerprint], closed: str) -> int:
        """Put the days after `through` up to `closed` into the shards, then move `through` to `closed`.

        Once a day, after midnight UTC (or after a restart days later). It runs after this round's day
        files are written, and reads them: the shards point at entries of exactly the stored files.
        A fold cut off before its manifest is done again (it sets each token's entries for a day).
        """
        through = self.search.through
        if through is not None and through >= closed:
            return 0
        dates = sorted(d for d, fp in prints.items() if fp[1] and d <= closed and (through is None or d > through))
        written = 0
        for start in range(0, max(len(dates), 1), BATCH):  # at least once: `through` moves even with no day
            changes: Changes = {}
            batch = dates[start:start + BATCH]
            for date in batch:
                new = await asyncio.to_thread(stored_postings, await self.writer.stored_day(date))
                diff(date, {}, new, changes)
            last = start + BATCH >= len(dates)
            written += await self.search.apply(changes, through=closed if last else batch[-1])
        log.info("index: %d day(s) folded into the search index, through %s", len(dates), closed)
        return written

    async def build_search(self, source: StateSource, closed: str) -> int:
        """No manifest: every closed day's entries in one pass (an archive made before the search index, or one
        indexed for the first time), not a batch of days at a time; an empty archive gets an empty index."""
        log.info("index: no search index yet; building it from the state DB")
        return await self.search.write_days(source.stream(), closed)


def _summary(date: str, fp: Fingerprint) -> dict[str, Any]:
    return {"date": date, "tasks": fp[0], "assets": fp[1], "bytes": fp[2], "failed": fp[3]}


async def rebuild(config: Config, storage: Storage, *, from_store: bool, progress: Any = None,
                  today: Callable[[], str] = utc_today) -> dict[str, int]:
    """Rewrite the search index (every day before `today`), every day file, days.json and index.html, from
    the state DB or the store.

    The search index is written first, in a pass of its own: the loop takes a stored day file for
    what the shards hold, so a rebuild cut off after the day files must not leave older shards.
    """
    closed = day_before(today())
    writer = IndexWriter(storage)
    await writer.write_page()
    before = set(await writer.load_days())
    totals = {"days": 0, "assets": 0, "failed": 0, "unreadable": 0}

    async def write(days: AsyncIterator[Day], count: int) -> None:
        n = 0
        async for day in days:
            n += 1
            await writer.write_day(day, force=True)
            before.discard(day.date)
            totals["days"] += 1
            totals["assets"] += len(day.assets)
            totals["failed"] += len(day.failed)
            if progress:
                progress("wrote", n, count)

    search = SearchWriter(storage)
    if from_store:
        days, totals["unreadable"] = await read_store(storage, config.storage.layout,
                                                      progress and (lambda n, total: progress("read", n, total)))
        await search.write_days(_each(days.values()), closed)
        await write(_each(days.values()), len(days))
    else:
        source = await asyncio.to_thread(open_source, config)
        try:
            count = len(await asyncio.to_thread(source.fingerprints))
            await search.write_days(source.stream(), closed)
            await write(source.stream(), count)
        finally:
            source.close()
    for date in before:  # listed before but empty now: its old file must not show stale entries
        await writer.write_day(Day(date), force=True)
    await writer.write_days_json(force=True)
    return totals


async def _each(days: Iterable[Day]) -> AsyncIterator[Day]:
    for day in days:
        yield day
