"""Where day files come from: the state DB (normal), or the store's sidecars and _failed records.

The state source opens its own read-only connection (SQLite here, PostgreSQL in pg_source.py)
and is used from a worker thread, so building a day never runs on the daemon's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from archiver.archive_format.days import Day, asset_entry, failed_entry, key_pattern, utc_day
from archiver.archive_format.keys import FAILED_PREFIX, failed_key, is_sidecar
from archiver.archive_format.media import media_of
from archiver.archive_format.sidecar import read_asset_entry, read_failed_entry
from archiver.config import Config
from archiver.model import utc_iso
from archiver.state import state_path
from archiver.storage import Storage

log = logging.getLogger(__name__)

# One row per archived asset, with what its sidecar says; `count` is the task's asset rows.
ASSETS = """
SELECT t.provider, t.task_id, t.labels, t.media AS hint, t.model, t.prompt, t.success_seen_at,
       a.idx, a.key, a.bytes, a.sha256, a.content_type, a.archived_at,
       (SELECT COUNT(*) FROM assets c WHERE c.task = t.id) AS count
FROM assets a JOIN tasks t ON t.id = a.task
WHERE a.state = 'archived' AND a.key IS NOT NULL {where}
"""
FAILED = """
SELECT provider, task_id, labels, reason, code, message, updated_at FROM tasks
WHERE state = 'failed' {where}
"""
EACH_ASSET = ASSETS.format(where="") + " ORDER BY COALESCE(t.success_seen_at, a.archived_at)"
EACH_FAILED = FAILED.format(where="") + " ORDER BY updated_at"
# Per day: what days.json shows, plus the newest change, so a day is rebuilt only when it moved.
_FINGERPRINTS = """
SELECT date(COALESCE(t.success_seen_at, a.archived_at), 'unixepoch') AS day, COUNT(DISTINCT t.id), COUNT(*),
       SUM(a.bytes), MAX(a.archived_at)
FROM assets a JOIN tasks t ON t.id = a.task
WHERE a.state = 'archived' AND a.key IS NOT NULL GROUP BY day
"""
_FAILED_FINGERPRINTS = """
SELECT date(updated_at, 'unixepoch') AS day, COUNT(*), MAX(updated_at) FROM tasks
WHERE state = 'failed' GROUP BY day
"""

Row = Any  # a sqlite3.Row or a psycopg dict row: both are read by column name
Fingerprint = tuple[int, int, int, int, float, float]  # tasks, assets, bytes, failed, newest asset, newest failure


def open_source(config: Config) -> StateSource:
    """The configured backend's state source: blocking (a PostgreSQL connect), so call it in a thread."""
    types = {name: entry.type for name, entry in config.providers.items()}
    if config.state.backend == "postgres":
        from archiver.browse.pg_source import PostgresSource  # psycopg only for those who use it

        return PostgresSource(config.state.dsn.reveal(), types)
    return StateSource(state_path(config), types)


class StateSource:
    """Day files from the state DB, through a read-only connection of its own."""

    def __init__(self, db_path: Path, provider_types: dict[str, str]) -> None:
        self.db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.types = provider_types

    def close(self) -> None:
        self.db.close()

    def fingerprints(self) -> dict[str, Fingerprint]:
        return self._prints(self.db.execute(_FINGERPRINTS), self.db.execute(_FAILED_FINGERPRINTS))

    def _prints(self, asset_rows: Iterable[Any], failed_rows: Iterable[Any]) -> dict[str, Fingerprint]:
        assets = {day: (tasks, count, int(size or 0), newest or 0.0)  # int: PostgreSQL sums to a Decimal
                  for day, tasks, count, size, newest in asset_rows}
        failed = {day: (count, newest) for day, count, newest in failed_rows}
        prints = {}
        for day in assets.keys() | failed.keys():
            tasks, count, size, newest = assets.get(day, (0, 0, 0, 0.0))
            fails, failed_at = failed.get(day, (0, 0.0))
            prints[day] = (tasks, count, size, fails, newest, failed_at)
        return prints

    def day(self, date: str) -> Day:
        """One day: assets whose success was seen that UTC day, tasks that failed that day."""
        start = f"strftime('%s', '{date}')"  # `date` is a YYYY-MM-DD we produced, never user text
        days = self._days(f"AND t.success_seen_at >= {start} AND t.success_seen_at < {start} + 86400",
                          f"AND updated_at >= {start} AND updated_at < {start} + 86400")
        return days.get(date, Day(date))

    def each_day(self) -> Iterator[Day]:
        """Every day in date order, one at a time: memory holds one day, whatever the archive's size."""
        yield from self._merge(self.db.execute(EACH_ASSET), self.db.execute(EACH_FAILED))

    def _merge(self, assets: Iterator[Row], failed: Iterator[Row]) -> Iterator[Day]:
        """Days from two row streams, each in time order."""
        a, f = next(assets, None), next(failed, None)
        while a is not None or f is not None:
            date = min(d for d in (a and _asset_day(a), f and utc_day(f["updated_at"])) if d)
            day = Day(date)
            while a is not None and _asset_day(a) == date:
                day.assets.append(self._asset(a))
                a = next(assets, None)
            while f is not None and utc_day(f["updated_at"]) == date:
                day.failed.append(_failed(f))
                f = next(failed, None)
            yield day

    def _days(self, assets_where: str, failed_where: str) -> dict[str, Day]:
        return self._collect(self.db.execute(ASSETS.format(where=assets_where)),
                             self.db.execute(FAILED.format(where=failed_where)))

    def _collect(self, asset_rows: Iterable[Row], failed_rows: Iterable[Row]) -> dict[str, Day]:
        days: dict[str, Day] = {}
        for r in asset_rows:
            date = _asset_day(r)
            days.setdefault(date, Day(date)).assets.append(self._asset(r))
        for r in failed_rows:
            date = utc_day(r["updated_at"])
            days.setdefault(date, Day(date)).failed.append(_failed(r))
        return days

    def _asset(self, r: Row) -> dict[str, Any]:
        return asset_entry(
            key=r["key"], sidecar=r["key"] + ".json", provider=r["provider"],
            provider_type=self.types.get(r["provider"]), task_id=r["task_id"], index=r["idx"],
            count=r["count"], media=media_of(r["content_type"], r["hint"]), model=r["model"],
            prompt=r["prompt"], labels=json.loads(r["labels"]), content_type=r["content_type"],
            bytes=r["bytes"], sha256=r["sha256"], archived_at=utc_iso(r["archived_at"]))


def _asset_day(r: Row) -> str:
    return utc_day(r["success_seen_at"] or r["archived_at"])


def _failed(r: Row) -> dict[str, Any]:
    return failed_entry(provider=r["provider"], task_id=r["task_id"], reason=r["reason"], provider_code=r["code"],
                        provider_message=r["message"], record=failed_key(r["provider"], r["task_id"]),
                        labels=json.loads(r["labels"]))


async def read_store(storage: Storage, layout: str, progress: Callable[[int, int], None] | None = None,
                     concurrency: int = 16) -> tuple[dict[str, Day], int]:
    """Every day from the sidecars and _failed records in the store; also how many were unreadable."""
    keys = [item.key async for item in storage.list() if is_sidecar(item.key) or item.key.startswith(FAILED_PREFIX)]
    pattern = key_pattern(layout)
    days: dict[str, Day] = {}
    bad = done = 0
    gate = asyncio.Semaphore(concurrency)

    async def one(key: str) -> None:
        nonlocal bad, done
        async with gate:
            try:
                _add(days, key, await storage.get(key), pattern)
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


def _add(days: dict[str, Day], key: str, data: bytes, pattern: Any) -> None:
    if key.startswith(FAILED_PREFIX):
        date, entry = read_failed_entry(key, data)
        days.setdefault(date, Day(date)).failed.append(entry)
    else:
        date, entry = read_asset_entry(key, data, pattern)
        days.setdefault(date, Day(date)).assets.append(entry)
