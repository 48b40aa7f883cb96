"""The state DB's own rules: health rows keep the time their trouble began; assets keep roles."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from archiver.model import Phase, TaskRef, TaskStatus
from archiver.state import Position, SqliteState


async def test_health_since_is_when_the_trouble_began(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "archiver.db")
    await state.set_health("kie", "failing", "HTTP 500")
    [row] = await state.health()
    began = row.at
    await asyncio.sleep(0.02)
    await state.set_health("kie", "failing", "HTTP 502")
    [row] = await state.health()
    assert row.at == began and row.message == "HTTP 502"
    await asyncio.sleep(0.02)
    await state.set_health("kie", "ok")
    [row] = await state.health()
    assert row.at > began and row.state == "ok"


async def test_asset_roles_are_kept_and_an_older_db_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "archiver.db"
    old = sqlite3.connect(path)  # the assets table as it was before roles
    old.execute("CREATE TABLE assets (task INTEGER NOT NULL, idx INTEGER NOT NULL, url TEXT NOT NULL, key TEXT,"
                " state TEXT NOT NULL DEFAULT 'pending', bytes INTEGER, sha256 TEXT, content_type TEXT,"
                " downloaded_at REAL, archived_at REAL, last_error TEXT, PRIMARY KEY (task, idx))")
    old.close()
    state = SqliteState(path)
    [task] = await state.ingest([TaskRef("suno", "t1")], [], Position(0, 0, 0, 0))
    _, assets = await state.succeeded(task.pk, TaskStatus(Phase.SUCCEEDED, urls=("https://a/1.mp3", "https://a/1.jpg"),
                                                          roles=("result", "cover")))
    assert [(a.url, a.role) for a in assets] == [("https://a/1.mp3", "result"), ("https://a/1.jpg", "cover")]
    [task2] = await state.ingest([TaskRef("rep", "t2")], [], Position(0, 0, 1, 1))
    _, assets = await state.succeeded(task2.pk, TaskStatus(Phase.SUCCEEDED, urls=("https://a/2.png",)))
    assert [a.role for a in assets] == [None]
