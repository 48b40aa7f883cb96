"""Migrations 2-3 (SQLite) / 6-7 (PostgreSQL): an existing state DB gains each asset's width, height, thumbnail,
placeholder and thumbnail-given-up time, keeps its rows, and the browse index reads them back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from archiver.state import open_reader, pg_schema, sqlite_schema, state_path
from tests.support.postgres import StateBackend
from tests.support.state import daemon_state, only, state_config

KEY = "kie/2026/09/02/old/00.png"
ROWS = ["INSERT INTO tasks (provider, task_id, state, first_seen_at, updated_at, success_seen_at)"
        " VALUES ('kie', 'old', 'archived', 1788307200, 1788307260, 1788307230)",
        "INSERT INTO assets (task, idx, url, key, state, bytes, sha256, content_type, archived_at)"
        f" SELECT id, 0, 'https://cdn.example/0.png', '{KEY}', 'archived', 10, 'ab', 'image/png', 1788307240"
        " FROM tasks WHERE task_id = 'old'"]


async def _upgraded_and_read_back(tmp_path: Path, backend: StateBackend) -> None:
    config = state_config(tmp_path, backend)
    state = await daemon_state(config)
    try:
        [asset] = await state.assets((await state.find("kie", "old")).pk)  # type: ignore[union-attr]
        assert (asset.key, asset.state, asset.bytes) == (KEY, "archived", 10)
        reader = open_reader(config)
        try:
            [before], _ = reader.day(1788307200, 1788307200 + 86400)
            assert (before.width, before.height, before.thumb, before.placeholder) == (None, None, None, None)
            assert await state.missing_thumbs(8) == [(KEY, "image/png")]  # the thumbnail worker catches up on it
            await state.set_media(KEY, width=2048, height=1536)
            before_thumb = reader.fingerprints()
            await state.set_media(KEY, thumb="_thumbs/" + KEY + ".webp", placeholder="#7a5c3e")
            # A thumbnail moves its day's fingerprint, so the index loop writes the day again.
            assert reader.fingerprints()["2026-09-02"] == before_thumb["2026-09-02"][:6] + (1,)
            [after], _ = reader.day(1788307200, 1788307200 + 86400)
            assert (after.width, after.height, after.thumb, after.placeholder) == (
                2048, 1536, "_thumbs/" + KEY + ".webp", "#7a5c3e")
        finally:
            reader.close()
    finally:
        await state.close()


@only("sqlite", "PostgreSQL's migration has its own test below")
async def test_a_version_1_sqlite_file_gains_the_columns(tmp_path: Path, state_backend: StateBackend) -> None:
    path = state_path(state_config(tmp_path, state_backend))
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    sqlite_schema._first_versioned(db)
    db.execute("PRAGMA user_version = 1")
    for sql in ROWS:
        db.execute(sql)
    db.close()
    await _upgraded_and_read_back(tmp_path, state_backend)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == sqlite_schema.VERSION == 3


@only("postgres", "SQLite's migration has its own test above")
async def test_a_version_5_database_gains_the_columns(tmp_path: Path, state_backend: StateBackend) -> None:
    assert state_backend.dsn is not None
    async with await psycopg.AsyncConnection.connect(state_backend.dsn, autocommit=True, row_factory=dict_row) as c:
        assert await pg_schema.migrate(c, upto=5) == (0, 5)
        for sql in ROWS:
            await c.execute(sql)  # type: ignore[arg-type]
    await _upgraded_and_read_back(tmp_path, state_backend)
    async with await psycopg.AsyncConnection.connect(state_backend.dsn, autocommit=True, row_factory=dict_row) as c:
        assert await pg_schema.schema_version(c) == pg_schema.VERSION == 7
