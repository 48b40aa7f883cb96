"""The SQLite file's numbered migrations: a file from before schema versions upgrades in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from archiver.errors import ArchiverError
from archiver.model import TaskState
from archiver.state import SqliteState
from archiver.state import sqlite_schema

# The first release's shape: no later columns, no kept counts, no daemons, none of the later indexes.
FIRST_RELEASE = """
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY, provider TEXT NOT NULL, task_id TEXT NOT NULL, labels TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL, reason TEXT, code TEXT, message TEXT, last_error TEXT, first_seen_at REAL NOT NULL,
    updated_at REAL NOT NULL, polls INTEGER NOT NULL DEFAULT 0, unknown_since REAL, success_seen_at REAL,
    media TEXT, model TEXT, prompt TEXT, input TEXT, response TEXT, task_created_at TEXT, task_completed_at TEXT,
    UNIQUE (provider, task_id)
);
CREATE INDEX tasks_by_state ON tasks (state, updated_at);
CREATE TABLE assets (
    task INTEGER NOT NULL REFERENCES tasks (id), idx INTEGER NOT NULL, url TEXT NOT NULL, key TEXT,
    state TEXT NOT NULL DEFAULT 'pending', bytes INTEGER, sha256 TEXT, content_type TEXT,
    downloaded_at REAL, archived_at REAL, last_error TEXT, PRIMARY KEY (task, idx)
);
CREATE TABLE history (task INTEGER NOT NULL REFERENCES tasks (id), at REAL NOT NULL, state TEXT NOT NULL,
                      reason TEXT, note TEXT);
CREATE TABLE inbox (id INTEGER PRIMARY KEY CHECK (id = 1), dev INTEGER NOT NULL, ino INTEGER NOT NULL,
                    offset INTEGER NOT NULL, line_no INTEGER NOT NULL);
CREATE TABLE rejects (id INTEGER PRIMARY KEY, at REAL NOT NULL, line_no INTEGER NOT NULL, reason TEXT NOT NULL,
                      line TEXT NOT NULL);
CREATE TABLE health (name TEXT PRIMARY KEY, state TEXT NOT NULL, message TEXT, at REAL NOT NULL);
INSERT INTO tasks (provider, task_id, state, first_seen_at, updated_at) VALUES ('kie', 'old-1', 'polling', 1, 1);
INSERT INTO tasks (provider, task_id, state, first_seen_at, updated_at) VALUES ('kie', 'old-2', 'archived', 1, 2);
INSERT INTO assets (task, idx, url, key, state) VALUES (2, 0, 'https://cdn.example/a.png', 'kie/a.png', 'archived');
INSERT INTO inbox VALUES (1, 10, 20, 300, 4);
"""


def _today_shape(path: Path) -> None:
    """A file as archiver made it before schema versions: the full shape, with user_version 0.

    The statements are the ones the unversioned code ran on every open (now migration 1's)."""
    db = sqlite3.connect(path, isolation_level=None)
    sqlite_schema._first_versioned(db)
    db.execute("INSERT INTO tasks (provider, task_id, state, first_seen_at, updated_at, owner, lane)"
               " VALUES ('kie', 'today', 'queued', 5, 5, 'gone-daemon', 2)")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()


def _version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def _names(path: Path, kind: str) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,))}


async def test_a_first_release_file_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "archiver.db"
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_RELEASE)
    state = SqliteState(path)
    try:
        assert _version(path) == sqlite_schema.VERSION
        old = await state.find("kie", "old-1")
        assert old is not None and old.state == TaskState.POLLING and old.next_poll_at == 0.0 and old.empty_polls == 0
        assert (await state.kept_counts())["polling"] == 1 and (await state.kept_counts())["archived"] == 1
        assert await state.kept_counts() == await state.counts()
        [asset] = await state.assets(2)
        assert (asset.key, asset.role) == ("kie/a.png", None)
        assert [k[3] for k in await state.archived_keys()] == ["kie/a.png"]
        position = await state.inbox_position()
        assert position is not None and position.offset == 300
        assert [c.pk for c in await state.claim(0, ["kie"])] == [1]  # the lease columns work
    finally:
        await state.close()
    assert {"tasks_free", "tasks_due", "tasks_aging", "assets_by_key", "tasks_by_age"} <= _names(path, "index")
    assert {"task_counts_insert", "task_counts_update", "task_counts_delete"} <= _names(path, "trigger")


async def test_a_file_of_the_unversioned_shape_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "archiver.db"
    _today_shape(path)
    state = SqliteState(path)
    try:
        assert _version(path) == sqlite_schema.VERSION
        task = await state.find("kie", "today")
        assert task is not None and task.state == TaskState.QUEUED
        assert (await state.kept_counts())["queued"] == 1
    finally:
        await state.close()
    again = SqliteState(path)  # a current file: nothing to do
    try:
        assert _version(path) == sqlite_schema.VERSION and (await again.counts())["queued"] == 1
    finally:
        await again.close()


def test_migrate_reports_what_it_did(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    try:
        assert sqlite_schema.migrate(db) == (0, sqlite_schema.VERSION)
        assert sqlite_schema.migrate(db) == (sqlite_schema.VERSION, sqlite_schema.VERSION)
    finally:
        db.close()


def test_a_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "archiver.db"
    SqliteState(path).db.close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {sqlite_schema.VERSION + 1}")
    with pytest.raises(ArchiverError, match=f"version {sqlite_schema.VERSION + 1}.*upgrade archiver"):
        SqliteState(path)
