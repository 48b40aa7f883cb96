"""Day files from a PostgreSQL state DB: StateSource's queries, in PostgreSQL's words.

A sync psycopg connection of its own, used from a worker thread exactly as the SQLite one
is: the index code is one for both backends, each_day streams through server-side cursors
(memory holds one day), and the daemon's async pool is left to the archiving work.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from archiver.archive_format.days import Day
from archiver.browse.sources import ASSETS, EACH_ASSET, EACH_FAILED, FAILED, Fingerprint, StateSource
from archiver.errors import ArchiverError, StateUnavailable

Conn = psycopg.Connection[dict[str, Any]]
_DAY = "to_char(to_timestamp({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"  # SQLite's date(x, 'unixepoch')
FINGERPRINTS = f"""
SELECT {_DAY.format("COALESCE(t.success_seen_at, a.archived_at)")} AS day, COUNT(DISTINCT t.id), COUNT(*),
       SUM(a.bytes), MAX(a.archived_at)
FROM assets a JOIN tasks t ON t.id = a.task
WHERE a.state = 'archived' AND a.key IS NOT NULL GROUP BY 1
"""
FAILED_FINGERPRINTS = f"""
SELECT {_DAY.format("updated_at")} AS day, COUNT(*), MAX(updated_at) FROM tasks
WHERE state = 'failed' GROUP BY 1
"""
STREAM_ROWS = 2000  # rows a server-side cursor fetches at a time in each_day


class PostgresSource(StateSource):
    """Day files from the PostgreSQL state DB, through a read-only connection of its own."""

    def __init__(self, dsn: str, provider_types: dict[str, str]) -> None:
        self.dsn = dsn
        self.types = provider_types
        self.conn: Conn | None = None
        with self._reading():  # connect now: `archiver index` says at once what is wrong
            pass

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def fingerprints(self) -> dict[str, Fingerprint]:
        with self._reading() as conn:
            cursor = conn.cursor(row_factory=tuple_row)
            assets = cursor.execute(FINGERPRINTS).fetchall()
            failed = cursor.execute(FAILED_FINGERPRINTS).fetchall()
        return self._prints(assets, failed)

    def day(self, date: str) -> Day:
        start = calendar.timegm(dt.date.fromisoformat(date).timetuple())
        span = {"start": start, "end": start + 86400}
        with self._reading() as conn:
            assets = conn.execute(ASSETS.format(where="AND t.success_seen_at >= %(start)s"
                                                      " AND t.success_seen_at < %(end)s"), span)
            failed = conn.execute(FAILED.format(where="AND updated_at >= %(start)s AND updated_at < %(end)s"), span)
            days = self._collect(assets, failed)
        return days.get(date, Day(date))

    def each_day(self) -> Iterator[Day]:
        with (self._reading() as conn, conn.transaction(),  # server-side cursors live in a transaction
              conn.cursor("index_assets") as assets, conn.cursor("index_failed") as failed):
            assets.itersize = failed.itersize = STREAM_ROWS
            assets.execute(EACH_ASSET)
            failed.execute(EACH_FAILED)
            yield from self._merge(iter(assets), iter(failed))

    @contextmanager
    def _reading(self) -> Iterator[Conn]:
        """The connection, opened again after a failure; a server that does not answer is StateUnavailable."""
        try:
            if self.conn is None or self.conn.closed:
                self.conn = _connect(self.dsn)
            yield self.conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            self.close()
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise StateUnavailable(f"the PostgreSQL state DB does not answer: {first}") from None


def _connect(dsn: str) -> Conn:
    conn = psycopg.connect(dsn, autocommit=True, row_factory=dict_row, connect_timeout=5)
    try:
        conn.execute("SET default_transaction_read_only = on")  # the index only ever reads
        row = conn.execute("SELECT to_regclass('archiver_schema') IS NOT NULL AS found").fetchone()
        if not row or not row["found"]:
            raise ArchiverError("state.dsn: this database holds no archiver state yet: start `archiver run` once"
                                " to create it")
    except BaseException:
        conn.close()
        raise
    return conn
