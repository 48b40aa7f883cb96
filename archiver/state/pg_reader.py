"""The browse index's reads (base.ArchiveReader) on a PostgreSQL state DB: queries.py's SQL, in psycopg.

A sync connection of its own, used from a worker thread exactly as the SQLite one is;
`each` streams through server-side cursors (memory holds a few rows), and the daemon's
async pool is left to the archiving work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from archiver.errors import ArchiverError, StateUnavailable
from archiver.state import queries as q
from archiver.state.common import first_line
from archiver.state.readers import fingerprints, in_time_order
from archiver.state.records import Fingerprint, IndexedAsset, IndexedFailure, indexed_asset, indexed_failure

Conn = psycopg.Connection[dict[str, Any]]
_DAY = "to_char(to_timestamp({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"  # SQLite's date(x, 'unixepoch')
STREAM_ROWS = 2000  # rows a server-side cursor fetches at a time in each


class PgReader:
    """The index's reads from the PostgreSQL state DB, through a read-only connection of its own."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: Conn | None = None
        with self._reading():  # connect now: `archiver index` says at once what is wrong
            pass

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def fingerprints(self) -> dict[str, Fingerprint]:
        with self._reading() as conn:
            cursor = conn.cursor(row_factory=tuple_row)
            assets = cursor.execute(q.FINGERPRINTS.format(day=_DAY.format(q.ASSET_DAY))).fetchall()
            failed = cursor.execute(q.FAILED_FINGERPRINTS.format(day=_DAY.format(q.FAILED_DAY))).fetchall()
        return fingerprints(assets, failed)

    def day(self, start: float, end: float) -> tuple[list[IndexedAsset], list[IndexedFailure]]:
        with self._reading() as conn:
            return ([indexed_asset(r) for r in conn.execute(q.pg(q.DAY_ASSETS), (start, end))],  # type: ignore[arg-type]
                    [indexed_failure(r) for r in conn.execute(q.pg(q.DAY_FAILED), (start, end))])  # type: ignore[arg-type]

    def each(self) -> Iterator[IndexedAsset | IndexedFailure]:
        with (self._reading() as conn, conn.transaction(),  # server-side cursors live in a transaction
              conn.cursor("index_assets") as assets, conn.cursor("index_failed") as failed):
            assets.itersize = failed.itersize = STREAM_ROWS
            assets.execute(q.EACH_ASSET)
            failed.execute(q.EACH_FAILED)
            yield from in_time_order(assets, failed)

    @contextmanager
    def _reading(self) -> Iterator[Conn]:
        """The connection, opened again after a failure; a server that does not answer is StateUnavailable."""
        try:
            if self.conn is None or self.conn.closed:
                self.conn = _connect(self.dsn)
            yield self.conn
        except psycopg.Error as e:
            self.close()
            raise StateUnavailable(f"the PostgreSQL state DB does not answer: {first_line(e)}") from None


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
