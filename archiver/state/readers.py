"""The browse index's reads (base.ArchiveReader) on a SQLite state file, and what both backends share.

A read-only connection of its own, used from a worker thread, so building a day never runs on
the daemon's event loop. The PostgreSQL reader is in pg_reader.py.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from archiver.errors import StateUnavailable
from archiver.state import queries as q
from archiver.state.common import first_line
from archiver.state.records import Fingerprint, IndexedAsset, IndexedFailure, indexed_asset, indexed_failure

_DAY = "date({}, 'unixepoch')"


def fingerprints(asset_rows: Iterable[Any], failed_rows: Iterable[Any]) -> dict[str, Fingerprint]:
    """Per day, from the two fingerprint queries' rows: (tasks, assets, bytes, failed, newest asset, newest failure,
    thumbnails)."""
    assets = {day: (tasks, count, int(size or 0), newest or 0.0, thumbs)  # int: PostgreSQL sums to a Decimal
              for day, tasks, count, size, newest, thumbs in asset_rows}
    failed = {day: (count, newest) for day, count, newest in failed_rows}
    prints = {}
    for day in assets.keys() | failed.keys():
        tasks, count, size, newest, thumbs = assets.get(day, (0, 0, 0, 0.0, 0))
        fails, failed_at = failed.get(day, (0, 0.0))
        prints[day] = (tasks, count, size, fails, newest, failed_at, thumbs)
    return prints


def in_time_order(asset_rows: Iterable[Any], failed_rows: Iterable[Any]) -> Iterator[IndexedAsset | IndexedFailure]:
    """Two row streams, each in time order (EACH_ASSET, EACH_FAILED), as one stream of records."""
    assets: Iterator[IndexedAsset | IndexedFailure] = map(indexed_asset, asset_rows)
    failed: Iterator[IndexedAsset | IndexedFailure] = map(indexed_failure, failed_rows)
    return heapq.merge(assets, failed, key=lambda r: r.seen)


class SqliteReader:
    """The index's reads from the SQLite state file, through a read-only connection."""

    def __init__(self, path: Path) -> None:
        with self._reading():
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
            self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    def fingerprints(self) -> dict[str, Fingerprint]:
        with self._reading():
            return fingerprints(self.db.execute(q.FINGERPRINTS.format(day=_DAY.format(q.ASSET_DAY))).fetchall(),
                                self.db.execute(q.FAILED_FINGERPRINTS.format(day=_DAY.format(q.FAILED_DAY))))

    def day(self, start: float, end: float) -> tuple[list[IndexedAsset], list[IndexedFailure]]:
        with self._reading():
            return ([indexed_asset(r) for r in self.db.execute(q.DAY_ASSETS, (start, end))],
                    [indexed_failure(r) for r in self.db.execute(q.DAY_FAILED, (start, end))])

    def each(self) -> Iterator[IndexedAsset | IndexedFailure]:
        with self._reading():
            yield from in_time_order(self.db.execute(q.EACH_ASSET), self.db.execute(q.EACH_FAILED))

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise StateUnavailable(f"the SQLite state DB failed: {first_line(e)}") from e
