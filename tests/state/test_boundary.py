"""Each backend turns its driver's errors into StateUnavailable: callers never see sqlite3 or psycopg."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from archiver.errors import StateUnavailable
from archiver.model import Phase, TaskRef, TaskState, TaskStatus
from archiver.state import Polled, Position, SqliteState, StateStore
from archiver.state.postgres import PostgresState
from archiver.state.readers import SqliteReader

CALLS: list[Callable[[StateStore], Awaitable[Any]]] = [
    lambda s: s.task(1), lambda s: s.find("kie", "a"), lambda s: s.tasks_in([TaskState.QUEUED]),
    lambda s: s.assets(1), lambda s: s.archived_keys(), lambda s: s.counts(), lambda s: s.kept_counts(),
    lambda s: s.recent([TaskState.FAILED], 5), lambda s: s.recent_rejects(5), lambda s: s.history(1),
    lambda s: s.add_tasks([TaskRef("kie", "a")], "test"), lambda s: s.ingest([], [], Position(1, 2, 3, 4)),
    lambda s: s.claim(0, ["kie"]), lambda s: s.heartbeat(), lambda s: s.due("kie", 0.0, 10, (), 2),
    lambda s: s.polled_many([Polled(1, 0.0)]), lambda s: s.succeeded(1, TaskStatus(Phase.SUCCEEDED, urls=("u",))),
    lambda s: s.failed(1, "gone"), lambda s: s.retry([1]), lambda s: s.requeue_asset(1, 0, "test"),
    lambda s: s.set_url(1, 0, "u"), lambda s: s.set_health("kie", "ok"), lambda s: s.probe_write(),
]


@pytest.mark.parametrize("backend", [SqliteState, PostgresState])
def test_every_call_of_a_backend_is_behind_its_boundary(backend: type) -> None:
    calls = [name for name in dir(backend) if not name.startswith("_")
             and inspect.iscoroutinefunction(inspect.getattr_static(backend, name))]
    assert len(calls) > 40
    assert [name for name in calls if not getattr(getattr(backend, name), "at_boundary", False)] == []


async def test_a_closed_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "archiver.db")
    state.db.close()  # every statement now fails in sqlite3
    for call in CALLS:
        with pytest.raises(StateUnavailable, match="SQLite state DB"):
            await call(state)


def test_a_file_that_is_no_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "archiver.db"
    path.write_bytes(b"not a database, not at all" * 100)
    with pytest.raises(StateUnavailable, match="SQLite state DB failed: file is not a database"):
        SqliteState(path)
    with pytest.raises(StateUnavailable, match="SQLite state DB failed"):
        SqliteReader(tmp_path / "missing.db").fingerprints()


async def test_a_closed_postgres_pool_is_unavailable(tmp_path: Path, pg_dsn: str) -> None:
    state = await PostgresState.open(pg_dsn, "me", lease=30.0, inbox=str(tmp_path / "inbox.txt"))
    await state.close()
    for call in CALLS:
        with pytest.raises(StateUnavailable, match="PostgreSQL state DB"):
            await call(state)
