"""The SQLite schema, as numbered migrations; whoever opens the file applies the missing ones.

The version is the file's `PRAGMA user_version`. A file made before versions were kept reads
as 0 and may hold any earlier shape: migration 1 brings each of those to the first versioned
one (tables it lacks, columns added since the first release, the kept counts, the indexes),
so it only adds what is missing. Later migrations are plain steps, as on PostgreSQL (pg_schema.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from archiver.errors import ArchiverError

TABLES = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    provider TEXT NOT NULL,
    task_id TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    reason TEXT, code TEXT, message TEXT, last_error TEXT,
    first_seen_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    polls INTEGER NOT NULL DEFAULT 0,
    unknown_since REAL,
    success_seen_at REAL,
    media TEXT, model TEXT, prompt TEXT, input TEXT, response TEXT,
    task_created_at TEXT, task_completed_at TEXT,
    record_due INTEGER NOT NULL DEFAULT 0,
    running_for REAL NOT NULL DEFAULT 0,
    UNIQUE (provider, task_id)
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, updated_at);
CREATE TABLE IF NOT EXISTS assets (
    task INTEGER NOT NULL REFERENCES tasks (id),
    idx INTEGER NOT NULL,
    url TEXT NOT NULL,
    key TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    bytes INTEGER, sha256 TEXT, content_type TEXT,
    downloaded_at REAL, archived_at REAL, last_error TEXT, role TEXT,
    PRIMARY KEY (task, idx)
);
CREATE TABLE IF NOT EXISTS history (
    task INTEGER NOT NULL REFERENCES tasks (id),
    at REAL NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS history_by_task ON history (task, at);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    dev INTEGER NOT NULL, ino INTEGER NOT NULL,
    offset INTEGER NOT NULL, line_no INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL, line_no INTEGER NOT NULL, reason TEXT NOT NULL, line TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    name TEXT PRIMARY KEY, state TEXT NOT NULL, message TEXT, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS daemons (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, started_at REAL NOT NULL, seen_at REAL NOT NULL
);
"""
# Columns added since the first release, before versions were kept; a file gains those it lacks.
LATER_COLUMNS = {
    "tasks": (("record_due", "INTEGER NOT NULL DEFAULT 0"), ("running_for", "REAL NOT NULL DEFAULT 0"),
              ("owner", "TEXT"), ("next_poll_at", "REAL NOT NULL DEFAULT 0"), ("answered_at", "REAL"),
              ("empty_polls", "INTEGER NOT NULL DEFAULT 0"), ("empty_since", "REAL"),
              ("lane", "INTEGER NOT NULL DEFAULT 0")),
    "assets": (("role", "TEXT"),),
}
# Tasks per state, kept by triggers so that /metrics reads five rows, never the whole table.
COUNTS = """
CREATE TABLE task_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO task_counts SELECT state, COUNT(*) FROM tasks GROUP BY state;
CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO task_counts (state, n) VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER task_counts_update AFTER UPDATE OF state ON tasks WHEN OLD.state != NEW.state BEGIN
    UPDATE task_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO task_counts (state, n) VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
    UPDATE task_counts SET n = n - 1 WHERE state = OLD.state;
END;
"""
INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_by_age ON tasks (provider, state, first_seen_at);
-- Live tasks no daemon holds: what a claim looks at, whatever the number of ended tasks.
CREATE INDEX IF NOT EXISTS tasks_free ON tasks (id)
    WHERE owner IS NULL AND state IN ('queued', 'polling', 'downloading');
CREATE INDEX IF NOT EXISTS assets_by_key ON assets (key);
-- The poll queue: a daemon's due tasks by lane (its schedule step) and time (archiver/policy.py).
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (provider, owner, lane, next_poll_at)
    WHERE state IN ('queued', 'polling');
-- Aging: each lane's tasks past its step's end, found without reading the rest of the lane.
CREATE INDEX IF NOT EXISTS tasks_aging ON tasks (provider, owner, lane, first_seen_at)
    WHERE state IN ('queued', 'polling');
"""


def _first_versioned(db: sqlite3.Connection) -> None:
    """Version 1 from nothing or from any shape made before versions were kept."""
    run(db, TABLES)
    for table, columns in LATER_COLUMNS.items():
        found = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, decl in columns:
            if name not in found:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'task_counts'").fetchone():
        run(db, COUNTS)  # counted once here, kept by the triggers from now on
    run(db, INDEXES)


MIGRATIONS: tuple[str | Callable[[sqlite3.Connection], None], ...] = (
    _first_versioned,  # 1
    # 2: what the browse index shows of each asset before it loads: its size, its thumbnail, a placeholder colour.
    """
    ALTER TABLE assets ADD COLUMN width INTEGER;
    ALTER TABLE assets ADD COLUMN height INTEGER;
    ALTER TABLE assets ADD COLUMN thumb TEXT;
    ALTER TABLE assets ADD COLUMN placeholder TEXT;
    """,
    # 3: when the thumbnail worker gave up on an asset (a corrupt file, a video without a poster), so that its
    # catch-up does not try it every round; and the index that catch-up reads, on the same terms as queries.UNTHUMBED.
    """
    ALTER TABLE assets ADD COLUMN thumb_failed REAL;
    CREATE INDEX assets_unthumbed ON assets (archived_at) WHERE
        thumb IS NULL AND thumb_failed IS NULL AND state = 'archived' AND key IS NOT NULL
        AND substr(content_type, 1, 6) IN ('image/', 'video/');
    """,
)
VERSION = len(MIGRATIONS)


def run(db: sqlite3.Connection, script: str) -> None:
    """A script's statements one by one: executescript would commit the migration's transaction."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
    assert not statement.strip(), f"an unfinished statement: {statement!r}"


def use_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL; on a new file that races another opener the switch fails at once, so retry."""
    for _ in range(100):  # the busy timeout does not cover it
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
            time.sleep(0.05)
    db.execute("PRAGMA journal_mode = WAL")


def refuse_newer(found: int, where: object) -> None:
    if found > VERSION:
        raise ArchiverError(f"{where}: the state DB's schema is version {found}; this archiver knows up to {VERSION}:"
                            " upgrade archiver on this host")


def migrate(db: sqlite3.Connection) -> tuple[int, int]:
    """Bring the file to VERSION; returns (from, to). Openers racing on a new file migrate it once:
    the check and the steps are one write transaction, so a second opener finds the work done."""
    db.execute("BEGIN IMMEDIATE")
    try:
        found = db.execute("PRAGMA user_version").fetchone()[0]
        refuse_newer(found, "the SQLite state file")
        for step in MIGRATIONS[found:]:
            if callable(step):
                step(db)
            else:
                run(db, step)
        db.execute(f"PRAGMA user_version = {max(found, VERSION)}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return found, max(found, VERSION)
