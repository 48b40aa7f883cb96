"""Writing the search index (`_index/search/`, docs/archive-format.md): whole, or only the shards that changed.

The shards hold closed days only (up to the manifest's `through`): today's words touch no shard,
and a day is folded in once, the first round after it closes. What memory holds, so the daemon
stays small (docs/operations.md): the manifest's list of shard ids and its `through`. When a
folded day changes, its previous postings are read from its stored day file (what the shards
were built from), which the day-file writer reads then anyway. A round reads the shards that
its changed tokens fall in from the store, a few at a time, and drops each once written: there is
no cache of shards (a GET costs less than the RAM of the whole index, and a PUT is needed anyway).
Shards are written before the day files they point into, and the manifest after the shards it
lists; a failed write leaves the round's days "moved", so the next round computes and writes the
same changes again (each sets a token's entries for a day, so doing it twice is harmless). The
manifest moves `through` after the shards that fold a day in; readers ignore the shards' entries
of days after `through`, so a reader of the older manifest sees each day once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

from archiver.archive_format.days import Day
from archiver.archive_format.media import JSON_TYPE
from archiver.archive_format.search import (MANIFEST_KEY, FullBuild, Postings, Shard, encode_manifest, encode_shard,
                                            encode_tokens, postings, read_manifest, read_shard, shard_key, shard_of)
from archiver.storage import Storage

log = logging.getLogger(__name__)

Changes = dict[str, dict[str, list[int] | None]]  # token → date → its entries now (None: none any more)
CONCURRENCY = 4  # shards read and written at once


def utc_today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def day_before(date: str) -> str:
    return str(dt.date.fromisoformat(date) - dt.timedelta(days=1))


def diff(date: str, old: Postings, new: Postings, into: Changes) -> None:
    """Record in `into` every token whose entries on `date` differ between `old` and `new`."""
    for token in old.keys() | new.keys():
        if old.get(token) != new.get(token):
            into.setdefault(token, {})[date] = new.get(token)


def stored_postings(data: bytes | None) -> Postings:
    """The postings of a stored day file (what the index was built from); {} without a readable one."""
    if data is None:
        return {}
    try:
        return postings(json.loads(data)["assets"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("search index: a stored day file is unreadable (%s); its day is indexed anew", e)
        return {}


class SearchWriter:
    """The search index of one store: a full build, or a round's changes applied to the shards they touch."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.listed: set[str] | None = None  # the shard ids the stored manifest lists; None until read
        self.through: str | None = None  # the newest day the shards hold; None: none

    async def load(self) -> bool:
        """Read the manifest; False when there is none (or it is unreadable, or /1): a full build is due."""
        try:
            manifest = read_manifest(await self.storage.get(MANIFEST_KEY))
        except FileNotFoundError:
            return False
        except (ValueError, TypeError) as e:
            log.warning("%s is unreadable (%s); the search index is built again", MANIFEST_KEY, e)
            return False
        self.listed, self.through = set(manifest.shards), manifest.through
        return True

    def holds(self, date: str) -> bool:
        """Whether the shards hold `date` (a closed day already folded in): its changes go through `apply`."""
        return self.through is not None and date <= self.through

    async def write_all(self, build: FullBuild, through: str) -> int:
        """Every shard of `build` (days up to `through`), then the manifest; shards listed before but not now
        are emptied."""
        if self.listed is None:
            await self.load()
        before = self.listed or set()
        shards = build.shards()
        now: set[str] = set()
        while (one := await asyncio.to_thread(next, shards, None)) is not None:
            await self._put(*one)
            now.add(one[0])
        await self._put_manifest(now, through)
        gone = sorted(before - now)
        for shard in gone:  # unlisted now; emptied so that no removed word stays readable
            await self._put(shard, encode_shard(shard, []))
        self.listed = now
        return len(now) + 1 + len(gone)

    async def write_days(self, days: AsyncIterator[Day], through: str) -> int:
        """The whole index from `days` up to `through` (later ones are skipped): memory holds it encoded once,
        about its size on disk."""
        build = FullBuild()
        async for day in days:
            if day.date <= through:
                await asyncio.to_thread(build.add, day)
        return await self.write_all(build, through)

    async def apply(self, changes: Changes, through: str | None = None) -> int:
        """Write the shards whose bytes `changes` alter, then the manifest if its list changed or `through` is
        given and moves it; how many files."""
        listed = self.listed or set()
        groups: dict[str, list[str]] = {}
        for token in changes:
            groups.setdefault(shard_of(token, listed) or token[:2], []).append(token)
        now = set(listed)
        later: list[tuple[str, bytes]] = []  # after the manifest: a split shard's rest, an emptied shard
        written = 0
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(shard: str) -> None:
            nonlocal written
            async with gate:
                old = await self._get(shard) if shard in listed else None
                files = await asyncio.to_thread(_update, shard, old, groups[shard], changes, listed)
                now.discard(shard)
                now.update(files)
                if shard in listed and shard not in files:
                    later.append((shard, encode_shard(shard, [])))
                for name, data in files.items():
                    if name == shard and data == old:
                        continue
                    if name == shard and len(files) > 1 and shard in listed:
                        later.append((name, data))  # its tokens move to new shards the old manifest does not list
                        continue
                    await self._put(name, data)
                    written += 1

        tasks = [asyncio.create_task(one(shard)) for shard in sorted(groups)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:  # the first failure ends the round: no shard is written after it
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if now != listed or (through is not None and through != self.through):
            await self._put_manifest(now, through or self.through)
            written += 1
        for name, data in later:
            await self._put(name, data)
            written += 1
        self.listed = now
        return written

    async def _put_manifest(self, shards: set[str], through: str | None) -> None:
        await self.storage.put_bytes(MANIFEST_KEY, encode_manifest(shards, through, time.time()),
                                     content_type=JSON_TYPE)
        self.through = through

    async def _get(self, shard: str) -> bytes | None:
        try:
            return await self.storage.get(shard_key(shard))
        except FileNotFoundError:
            log.warning("search index: shard %r is listed but missing; its tokens are indexed from now on", shard)
            return None

    async def _put(self, shard: str, data: bytes) -> None:
        await self.storage.put_bytes(shard_key(shard), data, content_type=JSON_TYPE)


def _update(shard: str, old: bytes | None, tokens: list[str], changes: Changes, listed: set[str]) -> dict[str, bytes]:
    """The shard files after `changes` to `tokens` (run in a thread: a shard is up to 256 KiB of JSON)."""
    decoded: Shard = {}
    if old is not None:
        try:
            decoded = read_shard(shard, old)
        except (ValueError, TypeError) as e:
            log.warning("search index: shard %r is unreadable (%s); written anew", shard, e)
    # A token that belongs to a longer shard now (left behind by an interrupted split) is dropped here.
    decoded = {t: dates for t, dates in decoded.items() if shard_of(t, listed) == shard}
    for token in tokens:
        dates: dict[str, Any] = decoded.get(token, {})
        for date, numbers in changes[token].items():
            if numbers:
                dates[date] = numbers
            else:
                dates.pop(date, None)
        if dates:
            decoded[token] = dates
        else:
            decoded.pop(token, None)
    return encode_tokens(shard, decoded)
